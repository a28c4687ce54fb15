"""The loop that sends consolidated notices (notices.py), run beside the dispatcher's (it starts it).

A few worker tasks, each claiming one due notice at a time (FOR UPDATE SKIP LOCKED, with a lease and
`attempts + 1`, the items no stop has marked read under the same lock), rendering it from those
items only, sending it on the channel's session (the same SMTP sessions and outcome classification
as single reminders: channels.py), and recording the outcome fenced by `attempts`. Notices are few
(one per customer and window), so no batching: one claim, one send, one write. On a transient
failure the notice goes back to `pending` with the delivery backoff, or `cancelled` if a stop left no
stage item meanwhile; an expired lease is taken back (in doubt) the same way. SIGTERM: a notice
being sent is finished and recorded, none is claimed after.
"""

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from dunning import outbox
from dunning.logging import get_logger
from dunning.tracing import context_from_traceparent, tracer
from dunning_notifier import contacts, optouts
from dunning_notifier import notice_repository as notice_repo
from dunning_notifier.channels import Channel, ChannelSession, channel_for
from dunning_notifier.due_wakeup import DueWakeup
from dunning_notifier.messages import reminder_cancelled
from dunning_notifier.notices import TEMPLATE, notice_sent, reminder_failed, reminder_sent
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.settings import Settings

log = get_logger(__name__)
_DB_ERRORS = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def notice_delivery(row: Any, live: list[int]) -> tuple[Delivery, list[str], list[str]]:
    """A claimed notice as the channel sends it: addressed to the customer's current contacts, its
    payload's items cut to the unmarked ones; the invoices it lists, and the ones it leaves out."""
    payload, recipient, cc = contacts.current(row)
    items = [payload["items"][p] for p in live]
    listed = list(dict.fromkeys(item["invoice_id"] for item in items))
    every = dict.fromkeys(item["invoice_id"] for item in payload["items"])
    left_out = [i for i in every if i not in listed]
    delivery = Delivery(
        delivery_id=row["delivery_id"],
        tenant_id=row["tenant_id"],
        invoice_id=",".join(listed),
        stage_id=row["notice_id"],
        stage=TEMPLATE,
        channel=row["channel"],
        recipient=recipient,
        attempts=row["attempts"],
        payload={**payload, "items": items, "template": TEMPLATE},
        traceparent=row["traceparent"],
        cc=cc,
    )
    return delivery, listed, left_out


class NoticeSender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        channels: dict[str, Channel],
        stopping: asyncio.Event,
        workers: int = 2,
        wakeup: DueWakeup | None = None,
    ):
        self.pool = pool
        self.settings = settings
        self.channels = channels
        self.stopping = stopping
        self.workers = workers
        self.wakeup = wakeup or DueWakeup(pool, settings.poll_seconds, settings.idle_poll_seconds)
        self.sent = self.failed = self.retried = self.cancelled = 0
        self._tracer = tracer("notifier")

    def counters(self) -> dict[str, int]:
        """This process's notice attempts since start-up, by outcome (/metrics)."""
        return {"sent": self.sent, "failed": self.failed, "retried": self.retried, "cancelled": self.cancelled}

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(i) for i in range(self.workers)))

    async def _loop(self, index: int) -> None:
        from dunning_notifier.dispatcher import backoff  # the dispatcher imports this module

        sessions: dict[str, ChannelSession] = {}
        sweep_every = min(self.settings.lease_seconds / 4, 5.0)
        last_sweep = -sweep_every
        error_backoff = 0.1
        try:
            while not self.stopping.is_set():
                woken = self.wakeup.token()  # before the claim: a notice written meanwhile is not slept past
                try:
                    async with self.pool.acquire() as conn:
                        if index == 0 and time.monotonic() - last_sweep >= sweep_every:
                            last_sweep = time.monotonic()
                            await self._release_expired(conn)
                        claimed = await notice_repo.claim_due(conn, 1, self.settings.lease_seconds)
                    error_backoff = 0.1
                except _DB_ERRORS as exc:
                    log.warning("notifier.notices.claim_failed", error=repr(exc), retry_in=error_backoff)
                    await self._sleep(error_backoff)
                    error_backoff = min(error_backoff * 2, 5.0)
                    continue
                if not claimed:  # until a notice is written or falls due
                    await self.wakeup.sleep(woken, self.stopping, self._next_due)
                    continue
                row, live = claimed[0]
                try:
                    await self._attempt(row, live, sessions, backoff)
                except Exception:  # left `sending`: its lease runs out and the sweep takes it back (in doubt)
                    log.exception("notifier.notice.attempt_crashed", notice_id=row["notice_id"])
                    await self._sleep(error_backoff)
        finally:
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    await session.close()

    async def _attempt(self, row: Any, live: list[int], sessions: dict[str, ChannelSession], backoff) -> None:
        """Send one claimed notice and record what came of it, in the NoticeComposed's trace."""
        delivery, listed, left_out = notice_delivery(row, live)
        parent = context_from_traceparent(delivery.traceparent)
        with self._tracer.start_as_current_span("notifier notice", context=parent, kind=SpanKind.CLIENT) as span:
            span.set_attribute("dunning.notice_id", row["notice_id"])
            span.set_attribute("dunning.channel", delivery.channel)
            outcome = await self._send(delivery, sessions)
            delay = backoff(delivery.attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
            await self._record_with_retry(row["notice_id"], delivery, (listed, left_out), outcome, delay)

    async def _next_due(self) -> float | None:
        async with self.pool.acquire() as conn:
            return await notice_repo.next_due(conn)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _send(self, d: Delivery, sessions: dict[str, ChannelSession]) -> Outcome:
        try:
            session = sessions.get(d.channel)
            if session is None:
                session = sessions[d.channel] = channel_for(self.channels, d.channel).open_session()
            outcome = await optouts.screen(self.pool, d, self.channels) or await session.send(d)  # opt-outs
        except Exception as exc:
            log.exception("notifier.notice.send_crashed", delivery_id=d.delivery_id)
            outcome = Retry("internal_error", repr(exc)[:2000], in_doubt=True)  # how far it got: unknown
        if isinstance(outcome, Retry) and d.attempts >= self.settings.max_attempts:
            outcome = Failed(outcome.error_code, f"gave up after {d.attempts} attempts: {outcome.error}", False)
        return outcome

    async def _record_with_retry(
        self, notice_id: str, d: Delivery, lists: tuple[list[str], list[str]], outcome: Outcome, delay: float
    ) -> None:
        wait = 0.1
        for attempt in range(1, 1_000_000):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self._record(conn, notice_id, d, lists, outcome, delay)
                self.wakeup.poke()  # a retry recorded now may fall due before the workers' sleep ends
                return
            except Exception as exc:
                if self.stopping.is_set() and attempt >= 5:
                    log.error("notifier.notice.record_abandoned", error=repr(exc), notice_id=notice_id)
                    return
                log.warning("notifier.notice.record_failed", error=repr(exc), retry_in=wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)

    async def _record(
        self,
        conn: asyncpg.Connection,
        notice_id: str,
        d: Delivery,
        lists: tuple[list[str], list[str]],
        o: Outcome,
        delay: float,
    ) -> None:
        """One attempt's outcome and its events, in the caller's transaction (`lists`: the invoices
        the attempt listed, and the notice's others)."""
        listed, left_out = lists
        ids = dict(notice_id=notice_id, delivery_id=d.delivery_id, attempts=d.attempts, invoices=listed)
        events: list[Any] = []
        if isinstance(o, Sent):
            if not await notice_repo.mark_sent(
                conn,
                notice_id,
                d.attempts,
                provider_message_id=o.provider_message_id,
                sent_at=o.sent_at,
                recipient=d.recipient,
                cc=d.cc,
                invoice_ids=listed,
                left_out=left_out,
            ):
                log.warning("notifier.notice.lease_lost", **ids)
                return
            events.append(
                notice_sent(d.payload, d.recipient or "", o.provider_message_id, (listed, left_out), o.sent_at)
            )
            events += [reminder_sent(r) for r in await notice_repo.settle_included(conn, notice_id, "sent", listed)]
            left = await notice_repo.cancel_left_out(conn, [notice_id], ("sent",))
            self.sent += 1
            log.info("notifier.notice.sent", provider_message_id=o.provider_message_id, **ids)
        elif isinstance(o, Failed):
            if not await notice_repo.mark_failed(
                conn,
                notice_id,
                d.attempts,
                error_code=o.error_code,
                error=o.error[:2000],
                recipient=d.recipient,
                cc=d.cc,
            ):
                log.warning("notifier.notice.lease_lost", **ids)
                return
            failed = await notice_repo.settle_included(conn, notice_id, "failed", listed)
            events += [reminder_failed(r, o.error_code, o.error, o.permanent) for r in failed]
            left = await notice_repo.cancel_left_out(conn, [notice_id], ("failed",))
            self.failed += 1
            log.warning("notifier.notice.failed", error_code=o.error_code, error=o.error[:500], **ids)
        else:
            state = await notice_repo.mark_retry(
                conn,
                notice_id,
                d.attempts,
                error_code=o.error_code,
                error=o.error[:2000],
                delay=delay,
                in_doubt=o.in_doubt,
                recipient=d.recipient,
                cc=d.cc,
            )
            if state is None:
                log.warning("notifier.notice.lease_lost", **ids)
                return
            left = await notice_repo.cancel_left_out(conn, [notice_id])
            if state == "cancelled":
                self.cancelled += 1
            else:
                self.retried += 1
            log.info("notifier.notice.retry_scheduled", state=state, error_code=o.error_code, retry_in=delay, **ids)
        events += [reminder_cancelled(r) for r in left]
        await outbox.add_many(conn, events)

    async def _release_expired(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            rows = await notice_repo.release_expired_leases(conn)
            left = await notice_repo.cancel_left_out(conn, [r["notice_id"] for r in rows])
            await outbox.add_many(conn, [reminder_cancelled(r) for r in left])
        for row in rows:
            log.warning(
                "notifier.notice.in_doubt", reason="lease_expired", notice_id=row["notice_id"], state=row["state"]
            )
