"""What invoice-ingest records of the money reconciliation reports (dunning.payments.v1; registered in
handlers.HANDLERS):

- PaymentReceived (one allocation of a payment), CreditNoteIssued, CustomerCreditApplied lower the
  balance; PaymentUnallocated and PaymentReversed raise it again (repository.money's money_entries,
  signed). The balance rule is written once (repository.payments.balance_and_status): a paid invoice
  whose balance rises above zero is open again, and its history says why (`reopened`);
- PaymentPending / PaymentPendingEnded: money whose fate is open (a debit processing, a chargeback),
  shown on the invoice, never counted as paid;
- InvoiceClosedByProcessor: Stripe voided the invoice or marked it uncollectible: it is voided or
  written off through the API's own path (changes.close), under the stops fence, once.

Each runs in the consumer runner's transaction with the inbox claim, and each row is keyed by its
event's id field (allocation, reversal, application id...), so a replay changes nothing.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from dunning.contracts import (
    CreditNoteIssued,
    CustomerCreditApplied,
    InvoiceClosedByProcessor,
    PaymentPending,
    PaymentPendingEnded,
    PaymentReceived,
    PaymentReversed,
    PaymentUnallocated,
)
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_ingest import changes, repository
from dunning_ingest.money_output import reversal_words
from dunning_ingest.repository import fence
from dunning_ingest.repository.money import MoneyEntry, end_pending, open_pending, record_money_entry
from dunning_ingest.repository.stop_events import StopEvent, record_stop_events

log = get_logger(__name__)
PROCESSORS = {"stripe": "Stripe"}


async def _invoice(conn: asyncpg.Connection, event: Event[Any]) -> asyncpg.Record:
    check_envelope(event)
    invoice = await repository.invoice_ref(conn, event.data.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id:
        raise Rejected(f"unknown invoice {event.data.invoice_id} for tenant {event.tenant_id}")
    return invoice


def _amounts(event: Event[Any], currency: str, *fields: str) -> dict[str, Decimal]:
    """The event's money `fields`, quantized to the invoice's currency (or Rejected)."""
    data = event.data
    if data.currency != currency:
        raise Rejected(f"{event.name} in {data.currency} for an invoice in {currency}")
    amounts = {k: getattr(data, k) for k in fields}
    if any(quantize(v, currency) != v for v in amounts.values()):
        raise Rejected(f"{event.name} amounts have more decimals than {currency} allows")
    return {k: quantize(v, currency) for k, v in amounts.items()}


class Reopening(NamedTuple):
    """What a `reopened` entry says if the change reopens a paid invoice: when, the reversal or
    allocation id, why in words, and `data` (cause: reversed | unallocated, ...)."""

    at: datetime
    reference: str
    reason: str
    data: dict[str, Any]


async def _rebalance(
    conn: asyncpg.Connection, event: Event[Any], invoice_id: str, reopening: Reopening | None = None
) -> None:
    """Apply the balance rule; a paid invoice that comes back open gets a `reopened` entry (amount: the
    balance it reopened with)."""
    balance, status, was = await repository.apply_balance(conn, invoice_id)
    if was == "paid" and status == "open" and reopening is not None:
        r = reopening
        entry = StopEvent(invoice_id, "reopened", r.at, r.reference, r.reason[:2000], balance, r.data)
        await record_stop_events(conn, event.tenant_id, event.id, [entry])
        log.info("ingest.invoice.reopened", invoice_id=invoice_id, balance=str(balance), cause=event.name)
    log.info(
        "ingest.balance.applied", invoice_id=invoice_id, event_name=event.name, balance=str(balance), status=status
    )


# --- what lowers the balance --------------------------------------------------------------------


async def payment_received(conn: asyncpg.Connection, event: Event[PaymentReceived]) -> None:
    p = event.data
    invoice = await _invoice(conn, event)
    amounts = _amounts(event, invoice["currency"], "amount", "amount_applied", "balance_remaining")
    if not await repository.record_payment(conn, p, amounts):
        log.info("ingest.payment.duplicate", payment_id=p.payment_id, allocation_id=p.allocation_id)
        return
    await _rebalance(conn, event, invoice["id"])


async def credit_note_issued(conn: asyncpg.Connection, event: Event[CreditNoteIssued]) -> None:
    c = event.data
    invoice = await _invoice(conn, event)
    amounts = _amounts(event, invoice["currency"], "amount", "amount_applied", "balance_remaining")
    if not await repository.record_credit_note(conn, c, amounts):
        log.info("ingest.credit_note.duplicate", credit_note_id=c.credit_note_id)
        return
    await _rebalance(conn, event, invoice["id"])


async def customer_credit_applied(conn: asyncpg.Connection, event: Event[CustomerCreditApplied]) -> None:
    c = event.data
    invoice = await _invoice(conn, event)
    cur = invoice["currency"]
    a = _amounts(event, cur, "amount_applied", "credit_remaining", "balance_remaining")
    data = {"credit_id": c.credit_id, "customer_id": c.customer_id, "credit_remaining": str(a["credit_remaining"])}
    reason = f"customer credit {c.credit_id} (the excess of payment {c.source_payment_id}) applied"
    entry = MoneyEntry(
        c.invoice_id,
        "credit_applied",
        c.application_id,
        c.tenant_id,
        c.source_payment_id,
        cur,
        a["amount_applied"],
        a["amount_applied"],
        a["balance_remaining"],
        c.settled,
        c.balance_version,
        c.applied_at,
        reason,
        data,
    )
    if not await record_money_entry(conn, entry):
        log.info("ingest.credit_applied.duplicate", application_id=c.application_id)
        return
    await _rebalance(conn, event, invoice["id"])


# --- what raises it again -----------------------------------------------------------------------


async def payment_unallocated(conn: asyncpg.Connection, event: Event[PaymentUnallocated]) -> None:
    u = event.data
    invoice = await _invoice(conn, event)
    cur = invoice["currency"]
    a = _amounts(event, cur, "amount", "balance_remaining")
    entry = MoneyEntry(
        u.invoice_id,
        "unallocated",
        u.allocation_id,
        u.tenant_id,
        u.payment_id,
        cur,
        a["amount"],
        -a["amount"],
        a["balance_remaining"],
        u.settled,
        u.balance_version,
        u.unallocated_at,
        u.reason,
        {"by": u.unallocated_by, "allocation_id": u.allocation_id},
    )
    if not await record_money_entry(conn, entry):
        log.info("ingest.unallocation.duplicate", allocation_id=u.allocation_id)
        return
    why = f"allocation {u.allocation_id} of payment {u.payment_id} undone ({format_amount(a['amount'], cur)} {cur})"
    data = {"cause": "unallocated", "payment_id": u.payment_id, "by": u.unallocated_by}
    await _rebalance(
        conn, event, invoice["id"], Reopening(u.unallocated_at, u.allocation_id, f"{why}: {u.reason}", data)
    )


async def payment_reversed(conn: asyncpg.Connection, event: Event[PaymentReversed]) -> None:
    r = event.data
    invoice = await _invoice(conn, event)
    cur = invoice["currency"]
    a = _amounts(event, cur, "amount", "balance_remaining")
    amount = format_amount(a["amount"], cur)
    words = reversal_words(r.kind, amount, cur, r.source_reference)
    data = {"reversal_kind": r.kind, "source": r.source, "source_reference": r.source_reference}
    entry = MoneyEntry(
        r.invoice_id,
        "reversed",
        r.reversal_id,
        r.tenant_id,
        r.payment_id,
        cur,
        a["amount"],
        -a["amount"],
        a["balance_remaining"],
        r.settled,
        r.balance_version,
        r.reversed_at,
        words,
        data,
    )
    if not await record_money_entry(conn, entry):
        log.info("ingest.reversal.duplicate", reversal_id=r.reversal_id, invoice_id=r.invoice_id)
        return
    why = f"{words} of payment {r.payment_id}"
    data = {"cause": "reversed", "reversal_kind": r.kind, "payment_id": r.payment_id, "source": r.source}
    await _rebalance(conn, event, invoice["id"], Reopening(r.reversed_at, r.reversal_id, why, data))


# --- money pending ------------------------------------------------------------------------------


async def payment_pending(conn: asyncpg.Connection, event: Event[PaymentPending]) -> None:
    p = event.data
    invoice = await _invoice(conn, event)
    a = _amounts(event, invoice["currency"], "amount")
    opened = await open_pending(
        conn,
        invoice_id=p.invoice_id,
        payment_id=p.payment_id,
        kind=p.kind,
        tenant_id=p.tenant_id,
        source=p.source,
        source_reference=p.source_reference,
        currency=p.currency,
        amount=a["amount"],
        since=p.since,
        acknowledged_at=p.acknowledged_at,
    )
    log.info("ingest.pending.opened", invoice_id=p.invoice_id, payment_id=p.payment_id, kind=p.kind, new=opened)


async def payment_pending_ended(conn: asyncpg.Connection, event: Event[PaymentPendingEnded]) -> None:
    e = event.data
    await _invoice(conn, event)
    amount = await end_pending(
        conn,
        invoice_id=e.invoice_id,
        payment_id=e.payment_id,
        kind=e.kind,
        ended_at=e.ended_at,
        outcome=e.outcome,
        reference=e.source_reference,
    )
    # None: ended already, or its PaymentPending never came (nothing was shown pending)
    log.info("ingest.pending.ended", invoice_id=e.invoice_id, kind=e.kind, outcome=e.outcome, ended=amount is not None)


# --- the processor closed it --------------------------------------------------------------------


def closed_reason(c: InvoiceClosedByProcessor) -> str:
    """`voided in Stripe (evt_...)`, `written off in Stripe (evt_...)`."""
    verb = "voided" if c.action == "void" else "written off"
    return f"{verb} in {PROCESSORS.get(c.source, c.source)} ({c.source_reference})"[:500]


async def invoice_closed_by_processor(conn: asyncpg.Connection, event: Event[InvoiceClosedByProcessor]) -> None:
    """Void or write off the invoice as the API does (changes.close: new version, InvoiceVoided or
    InvoiceWrittenOff in the outbox), acknowledged under the stops fence; a closed one stays as it is."""
    c = event.data
    check_envelope(event)
    acknowledged_at = await fence.acknowledge_time(conn)  # first: the stop's acknowledgement
    row = await repository.lock_invoice(conn, event.tenant_id, c.invoice_id)
    if row is None:
        raise Rejected(f"unknown invoice {c.invoice_id} for tenant {event.tenant_id}")
    if row["status"] != "open":
        log.info("ingest.invoice.already_closed", invoice_id=c.invoice_id, status=row["status"], action=c.action)
        return
    status = "void" if c.action == "void" else "written_off"
    await changes.close(conn, event.tenant_id, row, status, closed_reason(c), acknowledged_at)
    log.info("ingest.invoice.closed_by_processor", invoice_id=c.invoice_id, status=status, source=c.source)
