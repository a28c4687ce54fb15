"""The events reconciliation publishes, each built here and only here: PaymentReceived (one per
allocation, allocations.allocate), PaymentUnallocated, PaymentReversed, CustomerCreditApplied,
PaymentPending and PaymentPendingEnded (allocations.py, credits.py, money.py), CreditNoteIssued
(credit_notes.issue), InvoiceClosedByProcessor (stripe_money.invoice_closed), all through the outbox
on the payments topic (the watermark covers them), and PaymentsWatermark (sent directly by the
watermark publisher: a heartbeat statement, not state; see watermark.py)."""

from datetime import datetime
from decimal import Decimal

from dunning.contracts import (
    CreditNoteIssued,
    CustomerCreditApplied,
    InvoiceClosedByProcessor,
    PaymentPending,
    PaymentPendingEnded,
    PaymentReceived,
    PaymentReversed,
    PaymentsWatermark,
    PaymentUnallocated,
)
from dunning.money import quantize
from dunning_reconciliation.domain import IncomingPayment, quantum


def payment_received(
    p: IncomingPayment,
    *,
    invoice_id: str,
    invoice_external_id: str,
    applied: Decimal,
    remaining: Decimal,
    settled: bool,
    acknowledged_at: datetime,
    allocation_id: str | None = None,
    match_rule: str | None = None,
    match_reason: str | None = None,
    balance_version: int | None = None,
) -> PaymentReceived:
    """One allocation of p to an invoice; amounts written with the currency's ISO 4217 digits."""
    currency, unit = p.currency, quantum(p.currency)
    return PaymentReceived(
        p.payment_id,
        invoice_id,
        p.tenant_id,
        invoice_external_id,
        p.source,
        p.source_reference,
        currency,
        p.amount.quantize(unit),
        applied.quantize(unit),
        remaining.quantize(unit),
        settled,
        p.received_at,
        acknowledged_at,
        allocation_id,
        match_rule,
        match_reason,
        balance_version,
    )


def credit_note_issued(row, balance_version: int | None = None) -> CreditNoteIssued:
    """A credit note as stored (repository.insert_credit_note's row); amounts in the currency's digits."""
    currency = row["currency"]
    return CreditNoteIssued(
        row["credit_note_id"],
        row["invoice_id"],
        row["tenant_id"],
        row["invoice_external_id"],
        row["reference"],
        row["reason"],
        currency,
        quantize(row["amount"], currency),
        quantize(row["amount_applied"], currency),
        quantize(row["balance_remaining"], currency),
        row["settled"],
        row["acknowledged_at"],
        balance_version,
    )


def payment_unallocated(
    allocation, invoice, *, balance: Decimal, version: int, reason: str, by: str, at: datetime
) -> PaymentUnallocated:
    """An allocation row undone; `invoice` its locked invoice row (before the change)."""
    currency = allocation["currency"]
    return PaymentUnallocated(
        allocation["allocation_id"],
        allocation["payment_id"],
        allocation["invoice_id"],
        allocation["tenant_id"],
        invoice["external_id"],
        currency,
        quantize(allocation["amount"], currency),
        quantize(balance, currency),
        balance <= 0,
        reason,
        by,
        at,
        version,
    )


def payment_reversed(
    payment,
    invoice,
    *,
    reversal_id: str,
    kind: str,
    source: str,
    source_reference: str,
    amount: Decimal,
    balance: Decimal,
    version: int,
    reversed_at: datetime,
    acknowledged_at: datetime,
) -> PaymentReversed:
    """`amount` of a payment (its row) taken back from one invoice (its locked row)."""
    currency = payment["currency"]
    return PaymentReversed(
        reversal_id,
        payment["payment_id"],
        invoice["invoice_id"],
        payment["tenant_id"],
        invoice["external_id"],
        kind,
        source,
        source_reference,
        currency,
        quantize(amount, currency),
        quantize(balance, currency),
        balance <= 0,
        reversed_at,
        acknowledged_at,
        version,
    )


def customer_credit_applied(
    credit,
    invoice,
    *,
    application_id: str,
    amount: Decimal,
    credit_remaining: Decimal,
    balance: Decimal,
    version: int,
    applied_at: datetime,
    acknowledged_at: datetime,
) -> CustomerCreditApplied:
    """`amount` of a customer credit (its row) applied to an invoice (its locked row)."""
    currency = credit["currency"]
    return CustomerCreditApplied(
        application_id,
        credit["credit_id"],
        credit["customer_id"],
        invoice["invoice_id"],
        credit["tenant_id"],
        invoice["external_id"],
        credit["source_payment_id"],
        currency,
        quantize(amount, currency),
        quantize(credit_remaining, currency),
        quantize(balance, currency),
        balance <= 0,
        applied_at,
        acknowledged_at,
        version,
    )


def payment_pending(payment, invoice, *, kind: str, since: datetime, acknowledged_at: datetime) -> PaymentPending:
    """A payment (its row) whose fate is open, for one invoice (its row)."""
    currency = payment["currency"]
    return PaymentPending(
        payment["payment_id"],
        invoice["invoice_id"],
        payment["tenant_id"],
        invoice["external_id"],
        kind,
        payment["source"],
        payment["source_reference"],
        currency,
        quantize(payment["amount"], currency),
        since,
        acknowledged_at,
    )


def payment_pending_ended(
    payment, invoice_id: str, *, kind: str, outcome: str, source_reference: str, ended_at: datetime
) -> PaymentPendingEnded:
    return PaymentPendingEnded(
        payment["payment_id"], invoice_id, payment["tenant_id"], kind, outcome, source_reference, ended_at
    )


def payments_watermark(
    *,
    watermark: datetime,
    payments_topic: str,
    payments_offsets: dict[str, int],
    invoices_topic: str,
    invoice_positions: dict[str, int],
    computed_at: datetime,
) -> PaymentsWatermark:
    return PaymentsWatermark(
        watermark, payments_topic, payments_offsets, invoices_topic, invoice_positions, computed_at
    )


def invoice_closed_by_processor(
    *,
    invoice_id: str,
    tenant_id: str,
    invoice_external_id: str,
    action: str,
    source_reference: str,
    reason: str,
    closed_at: datetime,
    source: str = "stripe",
) -> InvoiceClosedByProcessor:
    """The processor that is the accounting system closed the invoice: invoice-ingest closes it."""
    return InvoiceClosedByProcessor(
        invoice_id, tenant_id, invoice_external_id, action, source, source_reference, reason, closed_at
    )
