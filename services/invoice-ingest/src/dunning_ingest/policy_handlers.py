"""What invoice-ingest records of the tenant's policies at work (issue 10; registered in handlers.HANDLERS):

- DunningPlanned.segment: which segment rule chose the policy and why (`segment_chosen`);
- StagesRescheduled for `below_minimum_balance`: stages no longer chased (`below_minimum_balance`);
- StageDeferred (scheduler): the stages held back by the send window, the contact cap or the quiet
  period move to their new time in the stage timeline, and the invoice's history says why (`deferred`);
- NoticeComposed (scheduler) and NoticeSent (notifier), both keyed by CUSTOMER: an entry on every
  invoice they name (`notice_composed`; `notice_sent`, or `notice_left_out` for an invoice stopped
  before the notice went);
- LateChargesAssessed / LateChargesWaived (scheduler): an entry each (`charges_assessed`,
  `charges_waived`) and the invoice's `charges` (repository.charges), never its amount or balance.

Each runs in the consumer runner's transaction with the inbox claim; the history entries are
stop_events rows keyed by (invoice, event id), so a redelivery adds nothing.
"""

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from dunning.clock import isoformat
from dunning.contracts import (
    DunningPlanned,
    LateChargesAssessed,
    LateChargesWaived,
    NoticeComposed,
    NoticeSent,
    StageDeferred,
    StagesRescheduled,
)
from dunning.events import Event
from dunning.handler_table import HandlerSpec, Rejected, check_envelope
from dunning.logging import get_logger
from dunning.money import format_amount
from dunning_ingest import repository
from dunning_ingest.repository import charges
from dunning_ingest.repository.stop_events import StopEvent, record_stop_events

log = get_logger(__name__)
# A notice may list up to 2,000 invoices, and its entry goes on each: each entry names at most this many.
IDS_SHOWN = 50
PAUSED_RANK = 0  # handlers.RANK of scheduled: a deferral moves a stage that has not fired, never one that has
BELOW_MINIMUM = "below_minimum_balance"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- entries added to events that already feed the stage timeline ---------------------------------


def segment_entries(p: DunningPlanned) -> list[StopEvent]:
    """The segment rule that chose the policy (none when the tenant has no rules)."""
    if not p.segment:
        return []
    rule, why = p.segment.get("rule", "default"), p.segment.get("reason")
    data = {"rule": rule, "reason": why, "policy_id": p.policy_id, "policy_version": p.policy_version}
    words = f"policy {p.policy_id} v{p.policy_version} chosen by rule {rule}" + (f": {why}" if why else "")
    return [StopEvent(p.invoice_id, "segment_chosen", p.planned_at, rule, words[:2000], None, data)]


def below_minimum_entries(r: StagesRescheduled) -> list[StopEvent]:
    """A re-plan because the balance fell below the policy's minimum: the stages no longer chased."""
    if r.reason != BELOW_MINIMUM:
        return []
    stages = [{"stage_id": s.stage_id, "stage": s.stage, "channel": s.channel, "state": s.state} for s in r.stages]
    words = f"the balance is below the policy's minimum: {_plural(len(stages), 'stage')} not chased"
    data = {"policy_id": r.policy_id, "policy_version": r.policy_version, "stages": stages}
    return [StopEvent(r.invoice_id, BELOW_MINIMUM, r.rescheduled_at, r.policy_id, words, None, data)]


Each = Callable[[asyncpg.Connection, Event], Awaitable[None]]
Batch = Callable[[asyncpg.Connection, list[Event]], Awaitable[None]]


def recorded(each: Each, batch: Batch, entries_of: Callable[[Any], list[StopEvent]]) -> HandlerSpec:
    """A timeline handler (and its batch twin) that also appends the history entries `entries_of` lists."""

    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        await each(conn, event)
        await record_stop_events(conn, event.tenant_id, event.id, entries_of(event.data))

    async def handle_batch(conn: asyncpg.Connection, events: list[Event]) -> None:
        await batch(conn, events)
        for event in events:
            entries = entries_of(event.data)
            if entries:
                await record_stop_events(conn, event.tenant_id, event.id, entries)

    handle.__name__, handle_batch.__name__ = f"{each.__name__}_recorded", f"{batch.__name__}_recorded"
    return HandlerSpec(handle, batch=handle_batch)


# --- deferrals --------------------------------------------------------------------------------------


async def stage_deferred(conn: asyncpg.Connection, event: Event[StageDeferred]) -> None:
    d = event.data
    check_envelope(event)
    invoice = await repository.invoice_ref(conn, d.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id:
        raise Rejected(f"unknown invoice {d.invoice_id} for tenant {event.tenant_id}")
    reason = f"deferred ({d.reason}): {d.detail}"[:2000]
    rows = [
        repository.StageObservation(
            s.stage_id,
            s.stage,
            s.sequence,
            s.channel,
            s.scheduled_at or s.previous_scheduled_at,
            d.deferred_at,  # a newer plan for these stages: their time moves
            "scheduled",
            PAUSED_RANK,
            reason,
            d.deferred_at,
            s.previous_scheduled_at,
            s.scheduled_at,
        )
        for s in d.stages
    ]
    unique = list({r.stage_id: r for r in rows}.values())
    if unique:
        applied = await repository.observe_stages(conn, event.tenant_id, d.invoice_id, event.id, unique)
        if applied != len(unique):
            raise Rejected(f"{len(unique) - applied} stage(s) belong to another invoice")
    stages = [
        {
            "stage_id": s.stage_id,
            "stage": s.stage,
            "channel": s.channel,
            "from": _ts(s.previous_scheduled_at),
            "to": _ts(s.scheduled_at),
        }
        for s in d.stages
    ]
    entry = StopEvent(d.invoice_id, "deferred", d.deferred_at, d.reason, d.detail[:2000], None, {"stages": stages})
    await record_stop_events(conn, event.tenant_id, event.id, [entry])
    log.info("ingest.timeline.deferred", invoice_id=d.invoice_id, reason=d.reason, stages=len(stages))


def _ts(value: Any) -> str | None:
    return None if value is None else isoformat(value)


# --- consolidated notices (keyed by customer) -------------------------------------------------------


def notice_entries(n: NoticeComposed) -> list[StopEvent]:
    """One entry per invoice the notice lists: with its stage, or listed as overdue."""
    invoice_ids = list(dict.fromkeys(i.invoice_id for i in n.items))
    others = len(invoice_ids) - 1
    entries = []
    for item in n.items:
        listed = f"its stage {item.stage}" if item.stage_id else "listed as overdue"
        words = f"in notice {n.notice_id} ({n.channel}) with {_plural(others, 'other invoice')}: {listed}"
        data: dict[str, Any] = {
            "notice_id": n.notice_id,
            "channel": n.channel,
            "stage_id": item.stage_id,
            "stage": item.stage,
            "listed_as": "stage" if item.stage_id else "overdue",
            "invoices": len(invoice_ids),
            "invoice_ids": invoice_ids[:IDS_SHOWN],
        }
        if item.charges:
            data["charges"] = item.charges
        entries.append(StopEvent(item.invoice_id, "notice_composed", n.composed_at, n.notice_id, words, None, data))
    return entries


def notice_sent_entries(s: NoticeSent) -> list[StopEvent]:
    """An entry for each invoice the notice listed when it went, and for each it left out."""
    data = {
        "notice_id": s.notice_id,
        "channel": s.channel,
        "invoices": len(s.invoice_ids),
        "invoice_ids": list(s.invoice_ids[:IDS_SHOWN]),
        "left_out": len(s.left_out),
    }
    sent = [
        StopEvent(
            i, "notice_sent", s.sent_at, s.notice_id, f"sent to {s.recipient} in notice {s.notice_id}", None, data
        )
        for i in s.invoice_ids
    ]
    left_out = [
        StopEvent(
            i,
            "notice_left_out",
            s.sent_at,
            s.notice_id,
            f"left out of notice {s.notice_id}: stopped (paid, paused or closed) before it went",
            None,
            data,
        )
        for i in s.left_out
        if i not in s.invoice_ids
    ]
    return sent + left_out


def _by_customer(entries_of: Callable[[Any], list[StopEvent]], what: str) -> Each:
    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        check_envelope(event)
        entries = entries_of(event.data)
        written = await record_stop_events(conn, event.tenant_id, event.id, entries)
        if entries and written == 0:
            raise Rejected(f"{what} names no invoice of tenant {event.tenant_id}")
        log.info(f"ingest.timeline.{what}", notice_id=event.data.notice_id, invoices=written)

    handle.__name__ = what
    return handle


notice_composed = _by_customer(notice_entries, "notice_composed")
notice_sent = _by_customer(notice_sent_entries, "notice_sent")


# --- late charges -----------------------------------------------------------------------------------


async def _charged_invoice(conn: asyncpg.Connection, event: Event[Any]) -> None:
    check_envelope(event)
    invoice = await repository.invoice_ref(conn, event.data.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id:
        raise Rejected(f"unknown invoice {event.data.invoice_id} for tenant {event.tenant_id}")
    if invoice["currency"] != event.data.currency:
        raise Rejected(f"{event.name} in {event.data.currency} for an invoice in {invoice['currency']}")


def _period_json(p: Any) -> dict[str, Any]:
    return {
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "days": p.days,
        "principal": str(p.principal),
        "annual_rate": str(p.annual_rate),
        "amount": str(p.amount),
    }


def assessed_entry(a: LateChargesAssessed) -> StopEvent:
    cur = a.currency
    parts = []
    if a.late_fee:
        parts.append(f"late fee {format_amount(a.late_fee, cur)} {cur}")
    if a.interest_to is not None:
        span = f"{a.interest_from.isoformat() if a.interest_from else '?'} to {a.interest_to.isoformat()}"
        parts.append(f"interest {format_amount(a.interest, cur)} {cur} ({span}, {a.day_count})")
    totals = (
        f"claimed so far: fees {format_amount(a.total_late_fees, cur)}, interest {format_amount(a.total_interest, cur)}"
    )
    words = f"stage {a.stage}: {'; '.join(parts) or 'nothing'}; {totals}"
    data = {
        "stage_id": a.stage_id,
        "stage": a.stage,
        "late_fee": format_amount(a.late_fee, cur),
        "interest": format_amount(a.interest, cur),
        "interest_from": a.interest_from.isoformat() if a.interest_from else None,
        "interest_to": a.interest_to.isoformat() if a.interest_to else None,
        "day_count": a.day_count,
        "total_late_fees": format_amount(a.total_late_fees, cur),
        "total_interest": format_amount(a.total_interest, cur),
        "periods": [_period_json(p) for p in a.periods],
    }
    return StopEvent(a.invoice_id, "charges_assessed", a.assessed_at, a.stage_id, words, a.late_fee + a.interest, data)


async def late_charges_assessed(conn: asyncpg.Connection, event: Event[LateChargesAssessed]) -> None:
    a = event.data
    await _charged_invoice(conn, event)
    await charges.record_assessed(
        conn, a.tenant_id, a.invoice_id, a.currency, a.total_late_fees, a.total_interest, a.assessed_at
    )
    await record_stop_events(conn, event.tenant_id, event.id, [assessed_entry(a)])
    log.info("ingest.charges.assessed", invoice_id=a.invoice_id, stage=a.stage, late_fee=str(a.late_fee))


async def late_charges_waived(conn: asyncpg.Connection, event: Event[LateChargesWaived]) -> None:
    w = event.data
    await _charged_invoice(conn, event)
    await charges.record_waived(
        conn, w.tenant_id, w.invoice_id, w.currency, w.late_fees, w.interest, w.waived_at, w.waived_by, w.reason
    )
    cur = w.currency
    data = {
        "late_fees": format_amount(w.late_fees, cur),
        "interest": format_amount(w.interest, cur),
        "by": w.waived_by,
    }
    total: Decimal = w.late_fees + w.interest
    entry = StopEvent(w.invoice_id, "charges_waived", w.waived_at, None, w.reason, total, data)
    await record_stop_events(conn, event.tenant_id, event.id, [entry])
    log.info("ingest.charges.waived", invoice_id=w.invoice_id, waived_by=w.waived_by)
