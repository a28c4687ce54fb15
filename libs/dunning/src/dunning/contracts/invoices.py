"""The events of dunning.invoices.v1 (schemas/topics/dunning.invoices.v1.yaml): an invoice and the
changes its accounting system makes to it."""

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


class _InvoiceUpdated(NamedTuple):
    invoice_id: str
    tenant_id: str
    external_id: str
    version: int
    number: str
    customer: Customer
    currency: str
    amount_due: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    changed: tuple[str, ...]  # number | customer | amount_due | due_date | payment_url | metadata
    previous_amount_due: Decimal
    previous_due_date: date
    updated_at: datetime


class InvoiceUpdated(_InvoiceUpdated, Contract):
    """The whole new state of a changed invoice; a consumer ignores a version it has seen."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceUpdated.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"


class _InvoiceVoided(NamedTuple):
    invoice_id: str
    tenant_id: str
    external_id: str
    version: int
    reason: str
    voided_at: datetime


class InvoiceVoided(_InvoiceVoided, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceVoided.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"


class _InvoiceWrittenOff(NamedTuple):
    invoice_id: str
    tenant_id: str
    external_id: str
    version: int
    reason: str
    currency: str
    amount_written_off: Decimal
    written_off_at: datetime


class InvoiceWrittenOff(_InvoiceWrittenOff, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceWrittenOff.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"
