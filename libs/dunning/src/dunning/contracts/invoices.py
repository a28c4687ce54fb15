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


class _DisputeOpened(NamedTuple):
    dispute_id: str  # dsp_...
    invoice_id: str
    tenant_id: str
    reason: str
    currency: str
    disputed_amount: Decimal | None  # None: the whole invoice
    opened_by: str
    acknowledged_at: datetime  # read under invoice-ingest's acknowledgement fence


class DisputeOpened(_DisputeOpened, Contract):
    """The customer disputes the invoice: its dunning pauses until the dispute is resolved."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.DisputeOpened.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"


class _DisputeResolved(NamedTuple):
    dispute_id: str
    invoice_id: str
    tenant_id: str
    outcome: str  # upheld | rejected
    currency: str
    credit_amount: Decimal | None  # upheld: the amount reconciliation credits (credit note reference = dispute_id)
    resolved_by: str
    note: str | None
    resolved_at: datetime


class DisputeResolved(_DisputeResolved, Contract):
    """A dispute's outcome: rejected resumes dunning; upheld credits `credit_amount` (reconciliation
    issues the credit note) and resumes on what is left once the credit is applied."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.DisputeResolved.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"


class _PromiseMade(NamedTuple):
    promise_id: str  # prm_...
    invoice_id: str
    tenant_id: str
    currency: str
    amount: Decimal
    promised_date: date  # the customer's calendar day
    made_by: str
    note: str | None
    acknowledged_at: datetime  # read under invoice-ingest's acknowledgement fence
    due_by: datetime | None = None  # promised by this instant (promised_date is its day); None: by the day's end


class PromiseMade(_PromiseMade, Contract):
    """A promise to pay `amount` by `promised_date`: dunning pauses until that day's end in the
    customer's time zone (or until `due_by`, when the promise named an instant) plus the policy's
    grace; the scheduler then judges it kept or broken."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PromiseMade.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"
