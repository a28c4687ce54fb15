"""The events of dunning.payments.v1."""

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
