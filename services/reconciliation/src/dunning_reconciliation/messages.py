"""The events reconciliation publishes, each built here and only here: PaymentReceived (through the
outbox, reconcile.apply_payment) and PaymentsWatermark (sent directly by the watermark publisher: a
heartbeat statement, not state; see watermark.py)."""

from datetime import datetime
from decimal import Decimal

from dunning.contracts import PaymentReceived, PaymentsWatermark
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
