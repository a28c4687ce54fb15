"""What invoice-ingest reacts to: stage and delivery events feed the timeline, payments the balance.

Handlers are plain `(conn, event)` functions run by the consumer runner inside the transaction that
also records the event id in the inbox. Events arrive out of order across topics (a ReminderSent
may come before the DunningPlanned that introduces its stage), so every handler is an upsert that
converges: a stage's state is its highest-ranked observation (scheduled/skipped < escalated <
sent/failed/cancelled, later time breaking ties), so a terminal state never goes back; every
observation is appended to the stage's history. A payment sets the balance only if it was
acknowledged after the payment that set it last.
"""

from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning.consumer import Rejected
from dunning.events import Event
from dunning.logging import get_logger
from dunning.money import quantize

from dunning_ingest import repository
from dunning_ingest.timeline_batch import timeline_batch, unique_rows

log = get_logger(__name__)

RANK = {"scheduled": 0, "skipped": 0, "escalated": 1, "sent": 2, "failed": 2, "cancelled": 2}


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def _invoice_for(conn: asyncpg.Connection, event: Event) -> asyncpg.Record:
    invoice_id = event.data["invoice_id"]
    invoice = await repository.invoice_ref(conn, invoice_id)
    if invoice is None:
        raise Rejected(f"unknown invoice {invoice_id}")
    if invoice["tenant_id"] != event.tenant_id or event.data["tenant_id"] != event.tenant_id:
        raise Rejected(f"invoice {invoice_id} does not belong to tenant {event.tenant_id}")
    return invoice


async def _observe(conn: asyncpg.Connection, event: Event, rows: list[tuple]) -> None:
    invoice = await _invoice_for(conn, event)
    unique = unique_rows(rows)
    applied = await repository.observe_stages(conn, invoice["tenant_id"], invoice["id"], event.id, unique)
    if applied != len(unique):
        raise Rejected(f"{len(unique) - applied} stage(s) belong to another invoice")
    log.info("ingest.timeline.observed", event_name=event.name, stages=len(unique))


def _row(stage: dict, state: str, reason: str | None, at: datetime, planned_at: datetime | None = None) -> tuple:
    return (stage["stage_id"], stage["stage"], stage.get("sequence"), stage["channel"],
            _ts(stage.get("scheduled_at")), planned_at, state, RANK[state], reason, at)


def _planned_rows(event: Event) -> list[tuple]:
    planned_at = _ts(event.data["planned_at"])
    return [_row(s, s["state"], s["reason"], planned_at, planned_at) for s in event.data["stages"]]


def _escalated_rows(event: Event) -> list[tuple]:
    d = event.data
    return [_row(d, "escalated", None, _ts(d["fired_at"]))]


def _cancelled_rows(event: Event) -> list[tuple]:
    d = event.data
    at = _ts(d["cancelled_at"])
    return [_row(s, "cancelled", d["reason"], at) for s in d["stages"]]


def _sent_rows(event: Event) -> list[tuple]:
    d = event.data
    reason = f"sent to {d['recipient']}"
    return [_row(d, "sent", reason[:500], _ts(d["sent_at"]))]


def _failed_rows(event: Event) -> list[tuple]:
    d = event.data
    kind = "permanent" if d["permanent"] else "transient"
    reason = f"{d['error_code']} ({kind}, {d['attempts']} attempt{'s' if d['attempts'] != 1 else ''}): {d['error']}"
    return [_row(d, "failed", reason[:2000], _ts(d["failed_at"]))]


async def dunning_planned(conn: asyncpg.Connection, event: Event) -> None:
    rows = _planned_rows(event)
    if rows:
        await _observe(conn, event, rows)
    else:
        await _invoice_for(conn, event)


async def stage_escalated(conn: asyncpg.Connection, event: Event) -> None:
    await _observe(conn, event, _escalated_rows(event))


async def stages_cancelled(conn: asyncpg.Connection, event: Event) -> None:
    await _observe(conn, event, _cancelled_rows(event))


async def reminder_sent(conn: asyncpg.Connection, event: Event) -> None:
    await _observe(conn, event, _sent_rows(event))


async def reminder_failed(conn: asyncpg.Connection, event: Event) -> None:
    await _observe(conn, event, _failed_rows(event))


async def payment_received(conn: asyncpg.Connection, event: Event) -> None:
    d = event.data
    invoice = await _invoice_for(conn, event)
    currency = invoice["currency"]
    if d["currency"] != currency:
        raise Rejected(f"payment in {d['currency']} for an invoice in {currency}")
    amounts = {k: Decimal(d[k]) for k in ("amount", "amount_applied", "balance_remaining")}
    if any(quantize(v, currency) != v for v in amounts.values()):
        raise Rejected(f"payment amounts have more decimals than {currency} allows")
    amounts = {k: quantize(v, currency) for k, v in amounts.items()}
    acknowledged_at = _ts(d["acknowledged_at"])
    if not await repository.record_payment(conn, d, amounts, _ts(d["received_at"]), acknowledged_at):
        log.info("ingest.payment.duplicate", payment_id=d["payment_id"])
        return
    latest = await repository.apply_balance(conn, invoice["id"], amounts["balance_remaining"], d["settled"],
                                            acknowledged_at, d["payment_id"])
    log.info("ingest.payment.recorded", payment_id=d["payment_id"], balance_updated=latest,
             balance=str(amounts["balance_remaining"]), settled=d["settled"])


BATCH_HANDLERS = {
    "dunning.DunningPlanned.v1": timeline_batch(_planned_rows),
    "dunning.StageEscalated.v1": timeline_batch(_escalated_rows),
    "dunning.StagesCancelled.v1": timeline_batch(_cancelled_rows),
    "dunning.ReminderSent.v1": timeline_batch(_sent_rows),
    "dunning.ReminderFailed.v1": timeline_batch(_failed_rows),
}
HANDLERS = {
    "dunning.DunningPlanned.v1": dunning_planned,
    "dunning.StageEscalated.v1": stage_escalated,
    "dunning.StagesCancelled.v1": stages_cancelled,
    "dunning.ReminderSent.v1": reminder_sent,
    "dunning.ReminderFailed.v1": reminder_failed,
    "dunning.PaymentReceived.v1": payment_received,
}
TOPICS = ["dunning.stages.v1", "dunning.deliveries.v1", "dunning.payments.v1"]
