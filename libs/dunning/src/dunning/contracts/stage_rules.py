"""The events of dunning.stages.v1 that the firing rules of a policy add (issue 10): a stage deferred
by a send window or a contact cap, a consolidated notice, late charges assessed and waived. The plan
and its lifecycle are in `stages`."""

from datetime import date, datetime
from decimal import Decimal
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract, Customer, Record
from dunning.contracts.stages import RescheduledStage, StageInvoice


class _StageDeferred(NamedTuple):
    invoice_id: str
    tenant_id: str
    customer_id: str
    reason: str  # send_window | contact_cap | quiet_period
    detail: str  # in words: "at most 2 reminders per P7D: 2 sent since 2026-12-01T09:00:00Z"
    deferred_at: datetime
    stages: tuple[RescheduledStage, ...]  # each deferred (stage, channel), its old and new time


class StageDeferred(_StageDeferred, Contract):
    """A due stage was held back, not dropped: outside the customer's send window, or by the tenant's
    contact cap or quiet period; it fires at its new time."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StageDeferred.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _NoticeItem(NamedTuple):
    invoice_id: str
    stage_id: str | None  # None: listed because it is overdue, no stage of its own fires in this notice
    stage: str | None
    sequence: int | None
    template: str | None
    invoice: StageInvoice
    charges: dict[str, str] | None = None  # as StageEscalated.charges


class NoticeItem(_NoticeItem, Record):
    """One invoice of a consolidated notice (NoticeComposed.items)."""

    __slots__ = ()


class _NoticeComposed(NamedTuple):
    notice_id: str
    tenant_id: str
    customer_id: str
    channel: str
    composed_at: datetime
    customer: Customer
    items: tuple[NoticeItem, ...]  # the invoices whose stages fire together, then the other overdue ones


class NoticeComposed(_NoticeComposed, Contract):
    """One notice for a customer listing every overdue invoice, by one channel (the tenant's
    consolidation): the notifier sends it once, leaving out the invoices stopped before it goes."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.NoticeComposed.v1"
    SOURCE: ClassVar[str] = "/scheduler"

    @property
    def subject(self) -> str:
        return self.customer_id


class _InterestPeriod(NamedTuple):
    start: date  # first day accrued
    end: date  # last day accrued (inclusive)
    days: int
    principal: Decimal  # the overdue balance over these days
    annual_rate: Decimal  # percent per annum, e.g. 12.15 (reference 4.15 + margin 8)
    amount: Decimal  # this period's interest, unrounded (the total is rounded once)


class InterestPeriod(_InterestPeriod, Record):
    """A run of days with one balance and one rate (LateChargesAssessed.periods)."""

    __slots__ = ()


class _LateChargesAssessed(NamedTuple):
    invoice_id: str
    tenant_id: str
    stage_id: str
    stage: str
    currency: str
    late_fee: Decimal  # charged by this stage (0: none)
    interest: Decimal  # accrued since the previous assessment, in the currency's minor unit
    interest_from: date | None  # the first day interest runs (None: the policy charges no interest)
    interest_to: date | None  # accrued up to and including this day
    day_count: str | None  # ACT/365F | ACT/360 | ACT/ACT-ISDA
    periods: tuple[InterestPeriod, ...]  # the whole accrual from interest_from, period by period
    total_late_fees: Decimal  # claimed on the invoice so far, this stage included
    total_interest: Decimal
    assessed_at: datetime


class LateChargesAssessed(_LateChargesAssessed, Contract):
    """A stage charged a late fee and/or interest, for the accounting system; the invoice's amount
    is never changed by it."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.LateChargesAssessed.v1"
    SOURCE: ClassVar[str] = "/scheduler"


class _LateChargesWaived(NamedTuple):
    invoice_id: str
    tenant_id: str
    currency: str
    late_fees: Decimal  # claimed until now and waived
    interest: Decimal
    reason: str
    waived_by: str
    waived_at: datetime


class LateChargesWaived(_LateChargesWaived, Contract):
    """The invoice's late fees and interest are waived: those claimed are withdrawn, no more are charged."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.LateChargesWaived.v1"
    SOURCE: ClassVar[str] = "/scheduler"
