"""The calendar keys of a policy document (see `policy`): how stage dates count and move.

    "days": "calendar",          calendar | business: whole-day offsets count the customer's working days
    "non_working_day": "next",   next | previous | keep: a stage on a non-working day moves
    "grace": "P0D",              overdue stages (offset > 0) count from the due date + grace

`days` and `non_working_day` act only when the tenant's settings give the customer a working calendar
(see `tenant_settings`); without one every day is a working day. Written out in the normalised
document only when not their default, so older documents stay equal to what they were.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dunning_scheduler.durations import DURATION_SHAPE, Duration, DurationError, parse_duration
from dunning_scheduler.policy_pauses import problem

NO_GRACE = parse_duration("P0D")
CALENDAR_MESSAGES = {
    "days": "must be one of calendar, business",
    "non_working_day": "must be one of next, previous, keep",
}


def whole_days(duration: Duration) -> bool:
    """Only weeks and days (a business-day count or a grace)."""
    return duration.whole_days is not None


class CalendarKeys(BaseModel):
    """The policy document's calendar keys (a base of `PolicyDocument`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    days: Annotated[
        Literal["calendar", "business"],
        Field(description="business: whole-day offsets count the customer's working days (tenant calendar)."),
    ] = "calendar"
    non_working_day: Annotated[
        Literal["next", "previous", "keep"],
        Field(description="A stage falling on a non-working day moves to the next or previous working day, or keeps."),
    ] = "next"
    grace: Annotated[
        str,
        Field(
            description="Overdue stages (offset > 0) count from the due date plus this (days as `days` says).",
            json_schema_extra={"pattern": DURATION_SHAPE},
        ),
    ] = "P0D"

    @field_validator("grace")
    @classmethod
    def _grace(cls, text: str) -> str:
        try:
            duration = parse_duration(text)
        except DurationError as exc:
            raise problem(str(exc)) from None
        if duration.negative:
            raise problem("must not be negative")
        if not whole_days(duration):
            raise problem('must be whole days or weeks, such as "P5D"')
        if duration.nominal_seconds() > 366 * 86400:
            raise problem("must be at most a year")
        return text

    def calendar_keys(self) -> dict[str, Any]:
        """The keys that differ from their default, for the normalised document."""
        keys: dict[str, Any] = {}
        if self.days != "calendar":
            keys["days"] = self.days
        if self.non_working_day != "next":
            keys["non_working_day"] = self.non_working_day
        if parse_duration(self.grace) != NO_GRACE:
            keys["grace"] = self.grace
        return keys
