"""The events of dunning.invoices.v1 (schemas/topics/dunning.invoices.v1.yaml)."""

from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract, Customer


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
