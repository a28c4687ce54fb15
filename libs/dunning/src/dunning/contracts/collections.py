"""The collections events of dunning.deliveries.v1 (the notifier's): call tasks for a collector and
the hand-off of an invoice to a collection agency (docs/collections.md)."""

from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _TaskCreated(NamedTuple):
    task_id: str
    tenant_id: str
    invoice_id: str
    customer_id: str | None
    stage: str
    due_at: datetime
    created_at: datetime
    stage_id: str | None = None  # the call stage that made it (absent: a follow-up of a callback)
    delivery_id: str | None = None  # the call stage's delivery (provider_message_id = task_id)
    follow_up_of: str | None = None  # the task whose `callback_requested` outcome made this one


class TaskCreated(_TaskCreated, Contract):
    """A call task for a collector: made by a stage on the `call` channel, or a callback's follow-up."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.TaskCreated.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _CallTaskCompleted(NamedTuple):
    task_id: str
    tenant_id: str
    invoice_id: str
    customer_id: str | None
    outcome: str  # promised_to_pay | disputed | paid_already | no_answer | wrong_number | callback_requested | other
    completed_by: str
    completed_at: datetime
    promised_amount: Decimal | None = None
    promised_date: date | None = None
    currency: str | None = None
    dispute_reason: str | None = None
    callback_at: datetime | None = None
    note: str | None = None


class CallTaskCompleted(_CallTaskCompleted, Contract):
    """A collector's call and what came of it; invoice-ingest turns a promise into PromiseMade and a
    dispute into DisputeOpened, as its own routes do."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CallTaskCompleted.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _TaskCancelled(NamedTuple):
    task_id: str
    tenant_id: str
    invoice_id: str
    reason: str  # the stop: a StagesCancelled reason or a DunningPaused cause
    cause_event_id: str
    cancelled_at: datetime


class TaskCancelled(_TaskCancelled, Contract):
    """An open or assigned call task dropped because a stop of its invoice (paid, paused, ...) came first."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.TaskCancelled.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _InvoiceHandedToAgency(NamedTuple):
    case_id: str
    tenant_id: str
    invoice_id: str
    customer_id: str | None
    agency_name: str
    mode: str  # webhook | export
    balance: Decimal
    currency: str
    handed_over_at: datetime


class InvoiceHandedToAgency(_InvoiceHandedToAgency, Contract):
    """The invoice's case went to the collection agency: the scheduler stops its dunning (`with_agency`)
    and invoice-ingest shows it `with_agency`."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InvoiceHandedToAgency.v1"
    SOURCE: ClassVar[str] = "/notifier"
