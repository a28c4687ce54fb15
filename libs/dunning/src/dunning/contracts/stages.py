"""The events of dunning.stages.v1: the plan of an invoice and its lifecycle."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, Customer, _day, _instant, _new, instant_text


class PlannedStage(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime
    state: str  # scheduled | skipped | cancelled
    reason: str | None

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PlannedStage":
        return _new(
            cls,
            (
                d["stage_id"],
                d["stage"],
                d["sequence"],
                d["channel"],
                _instant(d["scheduled_at"]),
                d["state"],
                d["reason"],
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "stage": self.stage,
            "sequence": self.sequence,
            "channel": self.channel,
            "scheduled_at": instant_text(self.scheduled_at),
            "state": self.state,
            "reason": self.reason,
        }


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "DunningPlanned":
        return _new(
            cls,
            (
                d["invoice_id"],
                d["tenant_id"],
                d["policy_id"],
                d["policy_version"],
                _instant(d["planned_at"]),
                tuple([PlannedStage.from_data(s) for s in d["stages"]]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "policy_id": self.policy_id,
            "policy_version": self.policy_version,
            "planned_at": instant_text(self.planned_at),
            "stages": [s.to_data() for s in self.stages],
        }


class StageInvoice(NamedTuple):
    """The invoice as a reminder shows it (StageEscalated.invoice)."""

    external_id: str
    number: str
    currency: str
    amount_due: Decimal
    balance: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageInvoice":
        return _new(
            cls,
            (
                d["external_id"],
                d["number"],
                d["currency"],
                Decimal(d["amount_due"]),
                Decimal(d["balance"]),
                _day(d["issue_date"]),
                _day(d["due_date"]),
                d["payment_url"],
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "number": self.number,
            "currency": self.currency,
            "amount_due": str(self.amount_due),
            "balance": str(self.balance),
            "issue_date": self.issue_date.isoformat(),
            "due_date": self.due_date.isoformat(),
            "payment_url": self.payment_url,
        }


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageEscalated":
        return _new(
            cls,
            (
                d["stage_id"],
                d["invoice_id"],
                d["tenant_id"],
                d["stage"],
                d["sequence"],
                d["channel"],
                d["template"],
                _instant(d["scheduled_at"]),
                _instant(d["fired_at"]),
                StageInvoice.from_data(d["invoice"]),
                Customer.from_data(d["customer"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "stage": self.stage,
            "sequence": self.sequence,
            "channel": self.channel,
            "template": self.template,
            "scheduled_at": instant_text(self.scheduled_at),
            "fired_at": instant_text(self.fired_at),
            "invoice": self.invoice.to_data(),
            "customer": self.customer.to_data(),
        }


class StageRef(NamedTuple):
    """A cancelled stage (StagesCancelled.stages)."""

    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageRef":
        return _new(cls, (d["stage_id"], d["stage"], d["sequence"], d["channel"], _instant(d["scheduled_at"])))

    def to_data(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "stage": self.stage,
            "sequence": self.sequence,
            "channel": self.channel,
            "scheduled_at": instant_text(self.scheduled_at),
        }


class _StagesCancelled(NamedTuple):
    invoice_id: str
    tenant_id: str
    reason: str  # invoice_settled | invoice_voided
    cause_event_id: str | None
    cancelled_at: datetime
    stages: tuple[StageRef, ...]


class StagesCancelled(_StagesCancelled, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StagesCancelled.v1"
    SOURCE: ClassVar[str] = "/scheduler"

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StagesCancelled":
        return _new(
            cls,
            (
                d["invoice_id"],
                d["tenant_id"],
                d["reason"],
                d["cause_event_id"],
                _instant(d["cancelled_at"]),
                tuple([StageRef.from_data(s) for s in d["stages"]]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "reason": self.reason,
            "cause_event_id": self.cause_event_id,
            "cancelled_at": instant_text(self.cancelled_at),
            "stages": [s.to_data() for s in self.stages],
        }
