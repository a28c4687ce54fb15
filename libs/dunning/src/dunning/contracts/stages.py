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
    reason: str | None  # skipped: past_at_planning | below_minimum_balance; cancelled: invoice_settled
    # Added later: why the stage is not at its policy offset, in words, when the working calendar or the
    # send window moved it ("2026-12-25 is Christmas Day (DE): moved to the next working day").
    moved: str | None = None


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
    # Added later: which segment rule chose the policy and why,
    # {"rule": "<rule name>" | "default", "reason": "<words>"} (absent: no rules configured).
    segment: dict[str, str] | None = None


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
    # What the reminder quotes besides the invoice (optional; absent in older events): a promise_broken
    # stage {"kind": "promise_broken", "promise_id", "promised_amount", "promised_date"}; an instalment
    # reminder {"kind": "instalment", "plan_id", "number", "instalments", "amount", "due_date", "currency"}.
    context: dict[str, str] | None = None
    # Added later. notice_id: the stage goes out in a consolidated notice (NoticeComposed) rather than
    # a reminder of its own; the notifier sends nothing for this event. charges: the late fees and
    # interest the reminder quotes (see LateChargesAssessed): {"currency", "late_fee", "interest",
    # "total_late_fees", "total_interest", "total_due", "interest_to", "day_count", "annual_rate"}.
    notice_id: str | None = None
    charges: dict[str, str] | None = None


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


class _DunningPaused(NamedTuple):
    invoice_id: str
    tenant_id: str
    cause: str  # hold | dispute | promise | payment_plan
    cause_id: str  # the hold, dispute, promise or plan id
    cause_event_id: str
    paused_at: datetime
    stages: tuple[StageRef, ...]  # the stages that were scheduled and are now paused (may be empty)


class DunningPaused(_DunningPaused, Contract):
    """The scheduler applied a pause to an invoice: its pending stages wait; the notifier drops the
    invoice's deliveries not yet attempted."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.DunningPaused.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _DunningResumed(NamedTuple):
    invoice_id: str
    tenant_id: str
    cause: str  # hold | dispute | promise | payment_plan
    cause_id: str
    # hold_released | hold_expired | dispute_rejected | dispute_upheld | promise_kept | promise_broken
    # | payment_plan_broken | payment_plan_cancelled
    reason: str
    resume_mode: str  # the policy's pauses.resume: spaced | latest_only | all_at_once
    resumed_at: datetime
    stages: tuple[RescheduledStage, ...]  # the paused stages with their old and new times


class DunningResumed(_DunningResumed, Contract):
    """The last pause on an invoice ended: its paused stages are scheduled again (no burst: see the
    policy's `pauses.resume`)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.DunningResumed.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _PromiseKept(NamedTuple):
    promise_id: str
    invoice_id: str
    tenant_id: str
    currency: str
    amount: Decimal
    promised_date: date
    paid_amount: Decimal  # paid or credited since the promise
    kept_at: datetime


class PromiseKept(_PromiseKept, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PromiseKept.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _PromiseBroken(NamedTuple):
    promise_id: str
    invoice_id: str
    tenant_id: str
    currency: str
    amount: Decimal
    promised_date: date
    paid_amount: Decimal
    deadline: datetime  # promised_date's end in the customer's zone (or PromiseMade.due_by) + the policy's grace
    broken_at: datetime


class PromiseBroken(_PromiseBroken, Contract):
    """Not paid by the deadline: dunning resumes with a promise_broken reminder quoting the promise."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PromiseBroken.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _InstalmentMissed(NamedTuple):
    plan_id: str
    tenant_id: str
    customer_id: str
    number: int
    due_date: date
    amount: Decimal
    currency: str
    paid_amount: Decimal  # paid towards the plan in all, at the deadline
    deadline: datetime  # the instalment's due date + the policy's grace
    missed_at: datetime


class InstalmentMissed(_InstalmentMissed, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.InstalmentMissed.v1"
    SOURCE: ClassVar[str] = "/scheduler"

    @property
    def subject(self) -> str:
        return self.customer_id


class _PaymentPlanBroken(NamedTuple):
    plan_id: str
    tenant_id: str
    customer_id: str
    invoice_ids: tuple[str, ...]
    missed_instalment: int
    currency: str
    remaining: Decimal  # the plan's unpaid total; dunning resumes on the invoices' whole balances
    broken_at: datetime


class PaymentPlanBroken(_PaymentPlanBroken, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPlanBroken.v1"
    SOURCE: ClassVar[str] = "/scheduler"

    @property
    def subject(self) -> str:
        return self.customer_id


class _PaymentPlanCompleted(NamedTuple):
    plan_id: str
    tenant_id: str
    customer_id: str
    invoice_ids: tuple[str, ...]
    currency: str
    total: Decimal
    completed_at: datetime


class PaymentPlanCompleted(_PaymentPlanCompleted, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentPlanCompleted.v1"
    SOURCE: ClassVar[str] = "/scheduler"

    @property
    def subject(self) -> str:
        return self.customer_id
