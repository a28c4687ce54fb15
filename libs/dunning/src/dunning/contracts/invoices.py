"""The events of dunning.invoices.v1 (schemas/topics/dunning.invoices.v1.yaml)."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, Customer, _day, _instant, _new, instant_text


class _InvoiceIssued(NamedTuple):
    invoice_id: str
    tenant_id: str
    external_id: str
    number: str
    customer: Customer
    currency: str
    amount_due: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    issued_at: datetime


class InvoiceIssued(_InvoiceIssued, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceIssued.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "InvoiceIssued":
        return _new(
            cls,
            (
                d["invoice_id"],
                d["tenant_id"],
                d["external_id"],
                d["number"],
                Customer.from_data(d["customer"]),
                d["currency"],
                Decimal(d["amount_due"]),
                _day(d["issue_date"]),
                _day(d["due_date"]),
                d["payment_url"],
                d["metadata"],
                _instant(d["issued_at"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "external_id": self.external_id,
            "number": self.number,
            "customer": self.customer.to_data(),
            "currency": self.currency,
            "amount_due": str(self.amount_due),
            "issue_date": self.issue_date.isoformat(),
            "due_date": self.due_date.isoformat(),
            "payment_url": self.payment_url,
            "metadata": self.metadata,
            "issued_at": instant_text(self.issued_at),
        }
