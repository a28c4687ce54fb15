"""The events of dunning.stages.v1: the plan of an invoice and its lifecycle."""

from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract, Customer, Record


class _PlannedStage(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime
    state: str  # scheduled | skipped | cancelled
    reason: str | None


class PlannedStage(_PlannedStage, Record):
    """A stage of a plan (DunningPlanned.stages)."""

    __slots__ = ()


class _DunningPlanned(NamedTuple):
    invoice_id: str
    tenant_id: str
    policy_id: str
    policy_version: int
    planned_at: datetime
    stages: tuple[PlannedStage, ...]


class DunningPlanned(_DunningPlanned, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.DunningPlanned.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _StageInvoice(NamedTuple):
    external_id: str
    number: str
    currency: str
    amount_due: Decimal
    balance: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None


class StageInvoice(_StageInvoice, Record):
    """The invoice as a reminder shows it (StageEscalated.invoice)."""

    __slots__ = ()


class _StageEscalated(NamedTuple):
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    fired_at: datetime
    invoice: StageInvoice
    customer: Customer


class StageEscalated(_StageEscalated, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StageEscalated.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _StageRef(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime


class StageRef(_StageRef, Record):
    """A cancelled stage (StagesCancelled.stages)."""

    __slots__ = ()


class _StagesCancelled(NamedTuple):
    invoice_id: str
    tenant_id: str
    reason: str  # invoice_settled | invoice_credited | invoice_voided | invoice_written_off
    cause_event_id: str | None
    cancelled_at: datetime
    stages: tuple[StageRef, ...]


class StagesCancelled(_StagesCancelled, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StagesCancelled.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _RescheduledStage(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    previous_scheduled_at: datetime | None  # None: a stage the new plan adds
    scheduled_at: datetime | None  # None: a stage the new plan drops
    state: str  # scheduled | skipped | cancelled


class RescheduledStage(_RescheduledStage, Record):
    """A re-planned stage with its old and new time (StagesRescheduled.stages)."""

    __slots__ = ()


class _StagesRescheduled(NamedTuple):
    invoice_id: str
    tenant_id: str
    reason: str  # due_date_changed | timezone_changed | policy_applied
    cause_event_id: str | None
    policy_id: str
    policy_version: int
    rescheduled_at: datetime
    stages: tuple[RescheduledStage, ...]


class StagesRescheduled(_StagesRescheduled, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StagesRescheduled.v1"
    SOURCE: ClassVar[str] = "/scheduler"
