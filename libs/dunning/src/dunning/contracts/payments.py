"""The events of dunning.payments.v1."""

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, _instant, _new, instant_text


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PaymentReceived":
        return _new(
            cls,
            (
                d["payment_id"],
                d["invoice_id"],
                d["tenant_id"],
                d["invoice_external_id"],
                d["source"],
                d["source_reference"],
                d["currency"],
                Decimal(d["amount"]),
                Decimal(d["amount_applied"]),
                Decimal(d["balance_remaining"]),
                d["settled"],
                _instant(d["received_at"]),
                _instant(d["acknowledged_at"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "invoice_external_id": self.invoice_external_id,
            "source": self.source,
            "source_reference": self.source_reference,
            "currency": self.currency,
            "amount": str(self.amount),
            "amount_applied": str(self.amount_applied),
            "balance_remaining": str(self.balance_remaining),
            "settled": self.settled,
            "received_at": instant_text(self.received_at),
            "acknowledged_at": instant_text(self.acknowledged_at),
        }
