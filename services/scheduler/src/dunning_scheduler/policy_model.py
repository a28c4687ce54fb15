"""A policy compiled for planning and firing: `Policy` and its `Stage`s (built by `policy.parse_policy`
from a valid `PolicyDocument`; a stored version never changes)."""

from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from typing import Any

from dunning_scheduler.durations import Duration, parse_duration
from dunning_scheduler.policy_calendar import NO_GRACE
from dunning_scheduler.policy_charges import InterestTerms
from dunning_scheduler.policy_pauses import InstalmentReminder


@dataclass(frozen=True)
class Stage:
    name: str
    offset: Duration
    offset_text: str
    template: str
    channels: tuple[str, ...]
    late_fee: dict[str, Decimal] = field(default_factory=dict, compare=False, hash=False)
    charge_interest: bool = False


@dataclass(frozen=True)
class Policy:
    """A valid policy, compiled for planning (a stored version of a `PolicyDocument`)."""

    policy_id: str
    anchor: str
    send_time: time
    stages: tuple[Stage, ...]
    document: dict[str, Any]  # normalised: every default written out
    version: int = 1
    is_default: bool = True
    resume_mode: str = "spaced"
    promise_grace: Duration = parse_duration("P2D")
    plan_grace: Duration = parse_duration("P3D")
    plan_reminders: tuple[InstalmentReminder, ...] = (
        InstalmentReminder("instalment_pre_due", parse_duration("-P3D")),
        InstalmentReminder("instalment_overdue", parse_duration("P1D")),
    )
    plan_channels: tuple[str, ...] = ("email",)
    days: str = "calendar"  # calendar | business
    non_working_day: str = "next"  # next | previous | keep
    grace: Duration = parse_duration("P0D")
    minimum_balance: dict[str, Decimal] = field(default_factory=dict)
    below_minimum: str = "skip"  # skip | pre_due_only
    interest: InterestTerms | None = None
    # Planning's memo of stage instants by (due date, zone): a policy version never changes.
    instants_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def chased(self, stage: Stage, balance: Decimal, currency: str) -> bool:
        """THE threshold rule (planning and firing both ask it): False when the currency has a minimum
        balance and `balance` is below it, unless below_minimum is pre_due_only and the stage is not overdue."""
        minimum = self.minimum_balance.get(currency)
        if minimum is None or balance >= minimum:
            return True
        return self.below_minimum == "pre_due_only" and not stage.offset.is_overdue

    @property
    def has_grace(self) -> bool:
        return self.grace != NO_GRACE
