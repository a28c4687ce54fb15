"""The events of dunning.payments.v1: what reconciliation applied to an invoice's balance."""

from datetime import datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _PaymentReceived(NamedTuple):
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    source: str  # stripe | api
    source_reference: str
    currency: str
    amount: Decimal
    amount_applied: Decimal
    balance_remaining: Decimal
    settled: bool
    received_at: datetime
    acknowledged_at: datetime


class PaymentReceived(_PaymentReceived, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentReceived.v1"
    SOURCE: ClassVar[str] = "/reconciliation"


class _CreditNoteIssued(NamedTuple):
    credit_note_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    reference: str
    reason: str
    currency: str
    amount: Decimal
    amount_applied: Decimal
    balance_remaining: Decimal
    settled: bool
    acknowledged_at: datetime


class CreditNoteIssued(_CreditNoteIssued, Contract):
    """A credit note applied to an invoice's balance, as a payment is (covered by the watermark)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CreditNoteIssued.v1"
    SOURCE: ClassVar[str] = "/reconciliation"
