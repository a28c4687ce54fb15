"""The dispatcher: sends the deliveries the consumer recorded, and records what came of each.

A claim loop takes due `pending` rows (FOR UPDATE SKIP LOCKED) and sets them `sending` with a lease
and `attempts + 1`, reading in the same statement the customer's current contacts (contacts.py: who
each attempt goes to, recorded with its outcome); `dispatch_concurrency` workers, each owning one
SMTP connection, render and send; a recorder writes the outcomes in batches (`sent` + ReminderSent,
`failed` + ReminderFailed through the outbox, or `pending` again with backoff), every write fenced
by `attempts` so a stale claim never overwrites a newer one. SMTP cannot make "accepted" and our
commit one step, so two windows remain where a reminder can go out twice (a crash between the
server's 250 and the `sent` commit; no reply after DATA): each is counted in `in_doubt_attempts` and
both copies share a Message-ID. The windows, how they are bounded (send timeout vs lease), detected
and measured: docs/cancel-guarantee.md#promise-3-none-twice-and-the-notifiers-windows. SIGTERM: stop
claiming, hand back unstarted claims, finish and record the sends in flight.

Stops (handlers.py): a delivery a stop of its invoice found mid-attempt is never put back to
`pending`: the retry write, the lease sweep and the hand-back make it `cancelled` in the same
statement (ReminderCancelled in the same transaction), so no attempt starts after the stop.

The outcome writes themselves (and `Attempt`): recording.py.
"""

import asyncio
import contextlib
import itertools
import random
import time

import asyncpg
from opentelemetry.trace import SpanKind

from dunning.clock import utcnow
from dunning.logging import bind_context, clear_context, get_logger
from dunning.loops import Backoff
from dunning.tracing import context_from_traceparent, tracer
from dunning_notifier import optouts
from dunning_notifier import repository as repo
from dunning_notifier.channels import Channel, ChannelSession, channel_for
from dunning_notifier.due_wakeup import DueWakeup
from dunning_notifier.messages import reminder_failed, reminder_sent
from dunning_notifier.notice_sender import NoticeSender
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.recording import Attempt, publish_cancelled, write_outcomes
from dunning_notifier.settings import Settings

log = get_logger(__name__)
RECORD_LINGER_SECONDS = 0.01


class _HeldConnection:
    """A pooled connection kept across iterations of a loop (each pool release costs a reset round
    trip); dropped after an error so that the next iteration starts on a fresh one."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            await self.drop()
            self.conn = await self.pool.acquire()
        return self.conn

    async def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn)


def backoff(attempts: int, base: float, cap: float) -> float:
    """A delivery's retry delay after `attempts` attempts: the loops' Backoff schedule (doubling from
    `base`, at most `cap`, ±20% jitter), counted from the delivery's stored attempts."""
    low, high = Backoff(initial=base, maximum=cap).bounds(attempts)
    return random.uniform(low, high)


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, channels: dict[str, Channel]):
        self.pool = pool
        self.settings = settings
        self.channels = channels
        self.screen = optouts.Screen(pool, channels)  # opted-out and invalid addresses are not sent
        self.concurrency = settings.dispatch_concurrency
        self._capacity = 2 * self.concurrency  # claimed and not yet sent: keeps every worker busy
        self._in_flight = 0
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._results: asyncio.Queue[Attempt | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # Since this process started (the /metrics counters); the database holds the totals.
        self.sent = self.failed = self.retried = 0
        self.cancelled = 0  # attempts that would have been retried, but a stop of the invoice came first
        self.in_doubt_reclaims = 0  # leases that ran out, taken back by this replica's sweep
        self.in_doubt_retries = 0  # sends that timed out or dropped after DATA, retried
        self.lease_lost = 0  # outcomes not recorded: the row had been re-claimed elsewhere
        self._tracer = tracer("notifier")  # once: get_tracer() builds a new tracer on every call
        self.wakeup = DueWakeup(pool, settings.poll_seconds, settings.idle_poll_seconds)
        self.notices = NoticeSender(
            pool, settings, channels, self._stopping, workers=min(2, self.concurrency), wakeup=self.wakeup
        )

    def stop(self) -> None:
        self._stopping.set()

    def counters(self) -> dict[str, int]:
        """This process's figures since start-up, for /metrics."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "cancelled": self.cancelled,
            "in_doubt_reclaims": self.in_doubt_reclaims,
            "in_doubt_retries": self.in_doubt_retries,
            "lease_lost": self.lease_lost,
            **{f"notices_{k}": v for k, v in self.notices.counters().items()},
        }

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(), name=f"dispatch-{i}") for i in range(self.concurrency)]
        recorder = asyncio.create_task(self._recorder(), name="dispatch-recorder")
        notices = asyncio.create_task(self.notices.run(), name="notice-sender")  # notice_sender.py
        log.info("notifier.dispatcher.started", concurrency=self.concurrency)
        try:
            await self._claim_loop()
        finally:
            await self._hand_back_queued()
            for _ in workers:
                self._queue.put_nowait(None)
            await asyncio.gather(*workers, return_exceptions=True)
            self._results.put_nowait(None)
            self._stopping.set()  # the notice sender stops with the claim loop, however it ended
            await asyncio.gather(recorder, notices, return_exceptions=True)
            await self.wakeup.close()
            log.info("notifier.dispatcher.stopped", sent=self.sent, failed=self.failed, retried=self.retried)

    # --- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        sweep_every = min(self.settings.lease_seconds / 4, 5.0)
        last_sweep = -sweep_every
        error_backoff = 0.1
        held = _HeldConnection(self.pool)
        try:
            while not self._stopping.is_set():
                woken = self.wakeup.token()  # before the claim: a delivery written meanwhile is not slept past
                free = self._capacity - self._in_flight
                if self._results.qsize() >= self.settings.record_batch_max:
                    # The recorder is behind (database trouble?): claim nothing more until it catches
                    # up, or unrecorded sends would outlive their leases and be sent again.
                    await self._sleep(self.settings.poll_seconds)
                    continue
                if free < self.concurrency and not self._queue.empty():
                    # The workers have work queued: claim again once half the capacity is free
                    # (fewer, larger claims), or when the queue runs dry.
                    self._slot_freed.clear()
                    await self._wait(self._slot_freed, self.settings.poll_seconds)
                    continue
                try:
                    conn = await held.get()
                    if time.monotonic() - last_sweep >= sweep_every:
                        last_sweep = time.monotonic()
                        await self._release_expired_leases(conn)
                    rows = await repo.claim_due(conn, free, self.settings.lease_seconds) if free > 0 else []
                    error_backoff = 0.1
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("notifier.dispatcher.claim_failed", error=repr(exc), retry_in=error_backoff)
                    await held.drop()
                    await self._sleep(error_backoff)
                    error_backoff = min(error_backoff * 2, 5.0)
                    continue
                self._in_flight += len(rows)
                claimed = [Delivery.from_row(row) for row in rows]
                await self.screen.claimed(conn, claimed)  # one query per batch; never raises (optouts.py)
                for d in claimed:
                    self._queue.put_nowait(d)
                if len(rows) < free:  # nothing more due right now: until one is written or falls due
                    await self.wakeup.sleep(woken, self._stopping, lambda: self._next_due(held))
        finally:
            await held.drop()

    async def _next_due(self, held: "_HeldConnection") -> float | None:
        return await repo.next_due(await held.get())

    async def _release_expired_leases(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            rows = await repo.release_expired_leases(conn)
            await publish_cancelled(conn, rows)
        for row in rows:
            self.in_doubt_reclaims += 1
            fields = ("delivery_id", "tenant_id", "invoice_id", "stage", "channel", "state", "attempts")
            log.warning("notifier.delivery.in_doubt", reason="lease_expired", **{k: row[k] for k in fields})

    async def _sleep(self, seconds: float) -> None:
        await self._wait(self._stopping, seconds)

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)

    async def _hand_back_queued(self) -> None:
        claims = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                claims.append((item.delivery_id, item.attempts))
        if not claims:
            return
        self._in_flight -= len(claims)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                cancelled = await publish_cancelled(conn, await repo.release_claims(conn, claims))
            log.info("notifier.dispatcher.handed_back", count=len(claims), cancelled=cancelled)
        except Exception as exc:
            log.warning("notifier.dispatcher.hand_back_failed", error=repr(exc), count=len(claims))

    # --- sending -----------------------------------------------------------------------------

    async def _worker(self) -> None:
        sessions: dict[str, ChannelSession] = {}
        try:
            while True:
                delivery = await self._queue.get()
                if delivery is None:
                    return
                try:
                    attempt = await self._attempt(delivery, sessions)
                except Exception as exc:
                    log.exception("notifier.delivery.attempt_crashed", delivery_id=delivery.delivery_id)
                    # In doubt: how far the attempt got (maybe past the server's 250) is unknown.
                    outcome: Outcome = Retry("internal_error", repr(exc)[:2000], in_doubt=True)
                    if delivery.attempts >= self.settings.max_attempts:
                        outcome = Failed("internal_error", repr(exc)[:2000], permanent=False)
                    attempt = Attempt(delivery, outcome, None, retry_in=self.settings.retry_max_seconds)
                finally:
                    self._in_flight -= 1
                    if self._capacity - self._in_flight >= self.concurrency or self._queue.empty():
                        self._slot_freed.set()
                self._results.put_nowait(attempt)
        finally:
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    await session.close()

    async def _attempt(self, d: Delivery, sessions: dict[str, ChannelSession]) -> Attempt:
        parent = context_from_traceparent(d.traceparent)
        bind_context(delivery_id=d.delivery_id, tenant_id=d.tenant_id, invoice_id=d.invoice_id)
        try:
            with self._tracer.start_as_current_span("notifier deliver", context=parent, kind=SpanKind.CLIENT) as span:
                span.set_attribute("dunning.delivery_id", d.delivery_id)
                span.set_attribute("dunning.channel", d.channel)
                session = sessions.get(d.channel)
                if session is None:
                    session = sessions[d.channel] = channel_for(self.channels, d.channel).open_session()
                try:  # an opted-out or invalid address is not sent (optouts.py)
                    outcome = await self.screen.outcome(d) or await session.send(d)
                except Exception as exc:
                    log.exception("notifier.delivery.send_crashed")
                    outcome = Retry("internal_error", repr(exc)[:2000], in_doubt=True)  # how far it got: unknown
                if isinstance(outcome, Retry) and d.attempts >= self.settings.max_attempts:
                    outcome = Failed(
                        outcome.error_code, f"gave up after {d.attempts} attempts: {outcome.error}", permanent=False
                    )
                # Build the events here, inside the span, so they carry the StageEscalated's trace.
                if isinstance(outcome, Sent):
                    return Attempt(d, outcome, reminder_sent(d, outcome))
                if isinstance(outcome, Failed):
                    return Attempt(d, outcome, reminder_failed(d, outcome, utcnow()))
                delay = backoff(d.attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
                return Attempt(d, outcome, None, retry_in=delay)
        finally:
            clear_context("delivery_id", "tenant_id", "invoice_id")

    # --- recording ---------------------------------------------------------------------------

    async def _recorder(self) -> None:
        """Record finished attempts in batches: what piles up during the last write, plus a short
        linger when the pile is small (one transaction per few dozen sends, not per send)."""
        held = _HeldConnection(self.pool)
        try:
            while True:
                item = await self._results.get()
                if item is not None and self._results.qsize() < self.settings.record_batch_max // 4:
                    await asyncio.sleep(RECORD_LINGER_SECONDS)
                batch: list[Attempt] = []
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self.settings.record_batch_max or self._results.empty():
                        break
                    item = self._results.get_nowait()
                if batch:
                    await self._record_with_retry(held, batch)
                if item is None:  # the sentinel comes after every worker has finished
                    return
        finally:
            await held.drop()

    async def _record_with_retry(self, held: "_HeldConnection", batch: list[Attempt]) -> None:
        delay = 0.1
        for attempt in itertools.count(1):
            try:
                await self._record(await held.get(), batch)
                self.wakeup.poke()  # a retry recorded now may fall due before the claim loop's sleep ends
                return
            except Exception as exc:
                await held.drop()
                if self._stopping.is_set() and attempt >= 5:
                    # Not recorded: the leases run out and these are sent again (the duplicate window).
                    log.error("notifier.dispatcher.record_abandoned", error=repr(exc), count=len(batch))
                    return
                log.warning(
                    "notifier.dispatcher.record_failed",
                    error=repr(exc),
                    retry_in=delay,
                    exc_info=not isinstance(exc, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _record(self, conn: asyncpg.Connection, batch: list[Attempt]) -> None:
        batch = sorted(batch, key=lambda a: a.delivery.delivery_id)  # rows locked in id order, as a stop does
        sent = [(a, a.outcome) for a in batch if isinstance(a.outcome, Sent)]
        failed = [(a, a.outcome) for a in batch if isinstance(a.outcome, Failed)]
        retry = [(a, a.outcome) for a in batch if isinstance(a.outcome, Retry)]
        async with conn.transaction():  # a fallback delivery (optouts.py) commits with the failure it follows
            recorded, retry_ids, cancelled = await write_outcomes(conn, batch, sent, failed, retry)
            done = [
                (optouts.origin_of(a.delivery), o.error_code) for a, o in failed if a.delivery.delivery_id in recorded
            ]
            await optouts.fall_back(conn, done, self.channels)
        for a in batch:
            d, o = a.delivery, a.outcome
            ids = dict(
                delivery_id=d.delivery_id,
                tenant_id=d.tenant_id,
                invoice_id=d.invoice_id,
                stage=d.stage,
                channel=d.channel,
                attempts=d.attempts,
            )
            if d.delivery_id not in recorded | retry_ids:
                self.lease_lost += 1
                log.warning("notifier.delivery.lease_lost", **ids)  # re-claimed elsewhere: its outcome wins
            elif isinstance(o, Sent):
                self.sent += 1
                log.info("notifier.delivery.sent", provider_message_id=o.provider_message_id, **ids)
            elif d.delivery_id in cancelled:
                self.cancelled += 1
                reason = cancelled[d.delivery_id]["cancel_reason"]
                log.info("notifier.delivery.cancelled", reason=reason, error_code=o.error_code, **ids)
            elif isinstance(o, Failed):
                self.failed += 1
                log.warning(
                    "notifier.delivery.failed",
                    error_code=o.error_code,
                    error=o.error[:500],
                    permanent=o.permanent,
                    **ids,
                )
            else:
                self.retried += 1
                if o.in_doubt:
                    self.in_doubt_retries += 1
                    log.warning("notifier.delivery.in_doubt", reason=o.error_code, **ids)
                log.info(
                    "notifier.delivery.retry_scheduled",
                    error_code=o.error_code,
                    error=o.error[:500],
                    retry_in=round(a.retry_in, 3),
                    **ids,
                )
