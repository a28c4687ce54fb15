"""The events reconciliation publishes, each built here and only here: PaymentReceived (through the
outbox, reconcile.apply_payment), CreditNoteIssued (through the outbox, credit_notes.issue; on the
payments topic, so the watermark covers it) and PaymentsWatermark (sent directly by the watermark
publisher: a heartbeat statement, not state; see watermark.py)."""

from datetime import datetime
from decimal import Decimal

from dunning.contracts import CreditNoteIssued, PaymentReceived, PaymentsWatermark
from dunning.money import quantize
from dunning_reconciliation.domain import IncomingPayment


def payment_received(
    p: IncomingPayment,
    *,
    invoice_id: str,
    invoice_external_id: str,
    applied: Decimal,
    remaining: Decimal,
    settled: bool,
    acknowledged_at: datetime,
) -> PaymentReceived:
    """p applied to an invoice; amounts written with the currency's ISO 4217 digits."""
    currency = p.currency
    return PaymentReceived(
        p.payment_id,
        invoice_id,
        p.tenant_id,
        invoice_external_id,
        p.source,
        p.source_reference,
        currency,
        quantize(p.amount, currency),
        quantize(applied, currency),
        quantize(remaining, currency),
        settled,
        p.received_at,
        acknowledged_at,
    )


def credit_note_issued(row) -> CreditNoteIssued:
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
