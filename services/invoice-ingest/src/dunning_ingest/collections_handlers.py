"""What invoice-ingest records of the notifier's collections work (registered in handlers.HANDLERS):

- TaskCreated, TaskCancelled: a history entry each (`call_task_created`, `call_task_cancelled`);
- CallTaskCompleted: an entry (`call_task_completed`), and the outcome fed into the existing flows,
  as the routes do it: `promised_to_pay` makes the promise (PromiseService.make: the same validation,
  PromiseMade), `disputed` opens the dispute (DisputeService.open: DisputeOpened). An outcome the
  invoice can no longer take (paid meanwhile, a promise pending already, ...) is not applied: the
  entry says why (data.applied false, reason: the problem), nothing is retried or dead-lettered;
- InvoiceHandedToAgency: the invoice shows `with_agency` (invoice_output.status_of) and an entry
  `handed_to_agency`.

Each runs in the consumer's transaction with the inbox claim; the entries are stop_events rows keyed by
(invoice, event id), so a redelivery adds nothing. The promise or dispute joins the acknowledgement
fence inside that transaction (after the inbox's row lock: the fence's lock is shared and never waits).
"""

from typing import Any

import asyncpg
import orjson

from dunning.contracts import CallTaskCompleted, InvoiceHandedToAgency, TaskCancelled, TaskCreated
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.http import Problem
from dunning.logging import get_logger
from dunning.money import format_amount
from dunning_ingest import repository
from dunning_ingest.disputes import DisputeIn, DisputeService
from dunning_ingest.idempotency import Reply
from dunning_ingest.promises import PromiseIn, PromiseService
from dunning_ingest.repository import agency
from dunning_ingest.repository.stop_events import StopEvent, record_stop_events

log = get_logger(__name__)


async def _invoice(conn: asyncpg.Connection, event: Event) -> asyncpg.Record:
    check_envelope(event)
    invoice = await repository.invoice_ref(conn, event.data.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id:
        raise Rejected(f"unknown invoice {event.data.invoice_id} for tenant {event.tenant_id}")
    return invoice


async def _entry(conn: asyncpg.Connection, event: Event, entry: StopEvent) -> None:
    await record_stop_events(conn, event.tenant_id, event.id, [entry])


async def task_created(conn: asyncpg.Connection, event: Event[TaskCreated]) -> None:
    t = event.data
    await _invoice(conn, event)
    data = {"stage": t.stage, "due_at": t.due_at.isoformat(), "follow_up_of": t.follow_up_of}
    reason = f"call task for {t.stage}" + (f" (follow-up of {t.follow_up_of})" if t.follow_up_of else "")
    await _entry(conn, event, StopEvent(t.invoice_id, "call_task_created", t.created_at, t.task_id, reason, None, data))


async def task_cancelled(conn: asyncpg.Connection, event: Event[TaskCancelled]) -> None:
    t = event.data
    await _invoice(conn, event)
    data = {"cause_event_id": t.cause_event_id}
    await _entry(
        conn, event, StopEvent(t.invoice_id, "call_task_cancelled", t.cancelled_at, t.task_id, t.reason, None, data)
    )


def _direct(conn: asyncpg.Connection) -> Any:
    """InvoiceService.run's shape, on the consumer's connection (no Idempotency-Key: the inbox dedupes)."""

    async def run(tenant_id: str, key: str | None, fingerprint: bytes | None, work: Any) -> Reply:
        return await work(conn)

    return run


async def _apply_outcome(conn: asyncpg.Connection, t: CallTaskCompleted) -> tuple[bool, str | None, str | None]:
    """(applied, the promise or dispute id, why not) of a promise or dispute outcome."""
    try:
        async with conn.transaction():  # a savepoint: a refused outcome leaves nothing behind
            if t.outcome == "promised_to_pay":
                body = PromiseIn.model_validate(
                    {
                        "amount": str(t.promised_amount),
                        "date": t.promised_date.isoformat() if t.promised_date else None,
                        "note": t.note,
                        "made_by": t.completed_by,
                    }
                )
                reply = await PromiseService(None, _direct(conn)).make(
                    t.tenant_id, t.invoice_id, body, key=None, fingerprint=None
                )
                return True, orjson.loads(reply.body)["promise_id"], None
            body_d = DisputeIn.model_validate(
                {"reason": t.dispute_reason or "disputed on a call", "opened_by": t.completed_by}
            )
            reply = await DisputeService(None, _direct(conn)).open(
                t.tenant_id, t.invoice_id, body_d, key=None, fingerprint=None
            )
            return True, orjson.loads(reply.body)["dispute_id"], None
    except Problem as exc:
        return False, None, exc.detail
    except ValueError as exc:  # the body itself (pydantic): an event the schema let through, e.g. no date
        return False, None, str(exc)[:500]


async def call_task_completed(conn: asyncpg.Connection, event: Event[CallTaskCompleted]) -> None:
    t = event.data
    invoice = await _invoice(conn, event)
    data: dict[str, Any] = {
        "outcome": t.outcome,
        "completed_by": t.completed_by,
        "promised_date": t.promised_date.isoformat() if t.promised_date else None,
        "dispute_reason": t.dispute_reason,
        "callback_at": t.callback_at.isoformat() if t.callback_at else None,
        "note": t.note,
    }
    reason = f"call: {t.outcome.replace('_', ' ')}"
    if t.outcome in ("promised_to_pay", "disputed"):
        applied, made, why = await _apply_outcome(conn, t)
        data.update(applied=applied, made=made)
        if not applied:
            reason += f" (not applied: {why})"
        log.info("ingest.call_task.outcome", task_id=t.task_id, outcome=t.outcome, applied=applied, made=made)
    if t.promised_amount is not None:
        data["promised_amount"] = format_amount(t.promised_amount, invoice["currency"])
    entry = StopEvent(
        t.invoice_id, "call_task_completed", t.completed_at, t.task_id, reason[:2000], t.promised_amount, data
    )
    await _entry(conn, event, entry)


async def handed_to_agency(conn: asyncpg.Connection, event: Event[InvoiceHandedToAgency]) -> None:
    h = event.data
    await _invoice(conn, event)
    row = await agency.mark_with_agency(conn, h.invoice_id, h.tenant_id, h.handed_over_at, h.case_id, h.agency_name)
    data = {"case_id": h.case_id, "agency_name": h.agency_name, "mode": h.mode, "currency": h.currency}
    reason = f"handed to {h.agency_name}"
    entry = StopEvent(h.invoice_id, "handed_to_agency", h.handed_over_at, h.case_id, reason, h.balance, data)
    await _entry(conn, event, entry)
    log.info("ingest.invoice.with_agency", case_id=h.case_id, marked=row is not None)
