"""What invoice-ingest records of the stops other services act on (registered in handlers.HANDLERS):

- DunningPaused / DunningResumed (scheduler): each stage moved is observed (paused; scheduled again
  at its new time, or skipped) in the stage timeline, and the pause or resume, with its cause, the
  stages it moved and why, becomes an entry of the invoice's history (stop_events);
- PromiseKept / PromiseBroken (scheduler): the promise's verdict (status, paid amount, deadline);
- ReminderCancelled (notifier): the delivery a stop dropped; its stage reads cancelled, and the
  invoice's history says which delivery, after how many attempts, and why.

Each runs inside the consumer runner's transaction with the inbox claim, so a redelivery does nothing.
The stage observations follow handlers.py's merge rule (rank, then time): `paused` ranks with
`scheduled` (0), so a later pause or resume moves a stage that has not fired and never one that has.
"""

from datetime import datetime
from typing import Any

import asyncpg

from dunning.clock import isoformat
from dunning.contracts import DunningPaused, DunningResumed, PromiseBroken, PromiseKept, ReminderCancelled
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning_ingest import repository
from dunning_ingest.money_output import MONEY_CAUSES, reason_words
from dunning_ingest.repository import promises
from dunning_ingest.repository.stop_events import StopEvent, record_stop_events
from dunning_ingest.timeline_batch import unique_rows

log = get_logger(__name__)
PAUSED_RANK, FINAL_RANK = 0, 2  # handlers.RANK: scheduled/skipped/paused 0 < escalated 1 < sent/failed/cancelled 2


async def _invoice(conn: asyncpg.Connection, event: Event[Any]) -> asyncpg.Record:
    check_envelope(event)
    invoice = await repository.invoice_ref(conn, event.data.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id:
        raise Rejected(f"unknown invoice {event.data.invoice_id} for tenant {event.tenant_id}")
    return invoice


def _ts(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


async def _observe(conn: asyncpg.Connection, event: Event[Any], rows: list[repository.StageObservation]) -> None:
    unique = unique_rows(rows)
    if unique:
        applied = await repository.observe_stages(conn, event.tenant_id, event.data.invoice_id, event.id, unique)
        if applied != len(unique):
            raise Rejected(f"{len(unique) - applied} stage(s) belong to another invoice")


async def _record(conn: asyncpg.Connection, event: Event[Any], entry: StopEvent) -> None:
    await record_stop_events(conn, event.tenant_id, event.id, [entry])


async def dunning_paused(conn: asyncpg.Connection, event: Event[DunningPaused]) -> None:
    p = event.data
    await _invoice(conn, event)
    reason = f"paused: {p.cause} {p.cause_id}"
    await _observe(
        conn,
        event,
        [
            repository.StageObservation(
                s.stage_id,
                s.stage,
                s.sequence,
                s.channel,
                s.scheduled_at,
                None,
                "paused",
                PAUSED_RANK,
                reason,
                p.paused_at,
            )
            for s in p.stages
        ],
    )
    stages = [
        {"stage_id": s.stage_id, "stage": s.stage, "channel": s.channel, "scheduled_at": _ts(s.scheduled_at)}
        for s in p.stages
    ]
    data = {"cause": p.cause, "stages": stages}
    why = reason_words(p.cause) if p.cause in MONEY_CAUSES else None  # money pending: say which
    await _record(conn, event, StopEvent(p.invoice_id, "paused", p.paused_at, p.cause_id, why, None, data))
    log.info("ingest.timeline.paused", invoice_id=p.invoice_id, cause=p.cause, stages=len(stages))


async def dunning_resumed(conn: asyncpg.Connection, event: Event[DunningResumed]) -> None:
    r = event.data
    await _invoice(conn, event)
    reason = f"resumed: {reason_words(r.reason)} ({r.resume_mode})"
    await _observe(
        conn,
        event,
        [
            repository.StageObservation(
                s.stage_id,
                s.stage,
                s.sequence,
                s.channel,
                s.scheduled_at or s.previous_scheduled_at,
                r.resumed_at,  # a newer plan for these stages: their time moves
                s.state,
                FINAL_RANK if s.state == "cancelled" else PAUSED_RANK,
                reason,
                r.resumed_at,
                s.previous_scheduled_at,
                s.scheduled_at,
            )
            for s in r.stages
        ],
    )
    stages = [
        {
            "stage_id": s.stage_id,
            "stage": s.stage,
            "channel": s.channel,
            "previous_scheduled_at": _ts(s.previous_scheduled_at),
            "scheduled_at": _ts(s.scheduled_at),
            "state": s.state,
        }
        for s in r.stages
    ]
    data = {"cause": r.cause, "resume_mode": r.resume_mode, "stages": stages}
    why = reason_words(r.reason)
    await _record(conn, event, StopEvent(r.invoice_id, "resumed", r.resumed_at, r.cause_id, why, None, data))
    log.info("ingest.timeline.resumed", invoice_id=r.invoice_id, reason=r.reason, stages=len(stages))


async def reminder_cancelled(conn: asyncpg.Connection, event: Event[ReminderCancelled]) -> None:
    c = event.data
    await _invoice(conn, event)
    tries = f"{c.attempts} attempt{'s' if c.attempts != 1 else ''}"
    reason = f"delivery dropped by a stop ({c.reason}) after {tries}"
    if c.notice_id is not None:
        reason += f" (its stage was in notice {c.notice_id})"
    await _observe(
        conn,
        event,
        [
            repository.StageObservation(
                c.stage_id, c.stage, None, c.channel, None, None, "cancelled", FINAL_RANK, reason, c.cancelled_at
            )
        ],
    )
    data = {
        "delivery_id": c.delivery_id,
        "stage": c.stage,
        "channel": c.channel,
        "attempts": c.attempts,
        "cause_event_id": c.cause_event_id,
    }
    if c.notice_id is not None:
        data["notice_id"] = c.notice_id
    entry = StopEvent(c.invoice_id, "reminder_cancelled", c.cancelled_at, c.stage_id, c.reason, None, data)
    await _record(conn, event, entry)
    log.info("ingest.timeline.reminder_cancelled", invoice_id=c.invoice_id, delivery_id=c.delivery_id)


async def _settle(conn: asyncpg.Connection, event: Event[Any], status: str, deadline: datetime | None, at: datetime):
    p = event.data
    invoice = await _invoice(conn, event)
    if p.currency != invoice["currency"]:
        raise Rejected(f"{event.name} in {p.currency} for an invoice in {invoice['currency']}")
    settled = await promises.settle_promise(
        conn, p.tenant_id, p.promise_id, status=status, paid_amount=p.paid_amount, deadline=deadline, at=at
    )
    if settled is None:
        raise Rejected(f"unknown promise {p.promise_id} for tenant {p.tenant_id}")
    log.info("ingest.promise.judged", promise_id=p.promise_id, status=status, applied=settled == "settled")


async def promise_kept(conn: asyncpg.Connection, event: Event[PromiseKept]) -> None:
    await _settle(conn, event, "kept", None, event.data.kept_at)


async def promise_broken(conn: asyncpg.Connection, event: Event[PromiseBroken]) -> None:
    await _settle(conn, event, "broken", event.data.deadline, event.data.broken_at)
