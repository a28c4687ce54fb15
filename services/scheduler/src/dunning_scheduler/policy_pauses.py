"""The `pauses` and `payment_plans` sections of a policy document (see `policy`): their document
models, validated strictly like the rest of the document, and their compiled forms.

    "pauses": {"resume": "spaced", "promise_grace": "P2D"},
    "payment_plans": {"grace": "P3D", "channels": ["email"],
                      "reminders": [{"name": "instalment_pre_due", "offset": "-P3D"},
                                    {"name": "instalment_overdue", "offset": "P1D"}]}

`pauses.resume` says how stages owed during a pause are sent when it ends (see `pausing`); the
graces and instalment offsets may be seconds too (`PT10S`) for demos and chaos runs.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from dunning_scheduler.durations import DURATION_SHAPE, Duration, DurationError, parse_duration

MAX_OFFSET_SECONDS = Decimal(10 * 366 * 86400)
RESUME_MODES = ("spaced", "latest_only", "all_at_once")

Channel = Literal["email", "sms", "webhook", "letter", "call", "agency"]

PAUSES_MESSAGES = {
    "promise_grace": 'must be an ISO 8601 duration string such as "P2D" or "PT10S"',
    "grace": 'must be an ISO 8601 duration string such as "P2D" or "PT10S"',
    "resume": f"must be one of {', '.join(RESUME_MODES)}",
    "pauses": "must be an object",
    "payment_plans": "must be an object",
    "reminders": "must be a list of at most 5 reminders {name, offset}",
}


def problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("policy", message)


def _duration(text: str, *, positive: bool = False) -> str:
    """A valid ISO 8601 duration within 10 years (and not negative, for a grace), else a problem."""
    try:
        duration = parse_duration(text)
    except DurationError as exc:
        raise problem(str(exc)) from None
    if abs(duration.nominal_seconds()) > MAX_OFFSET_SECONDS:
        raise problem("must be within 10 years")
    if positive and duration.negative:
        raise problem("must not be negative")
    return text


_DURATION_FIELD = {"pattern": DURATION_SHAPE}


class PausesDocument(BaseModel):
    """How dunning pauses (holds, disputes, promises, plans) end."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    resume: Annotated[
        Literal["spaced", "latest_only", "all_at_once"],
        Field(
            description="When the last pause of an invoice ends: spaced (the next owed stage at the resume, the "
            "rest keep their spacing after it), latest_only (only the most escalated stage owed during the pause "
            "goes at the resume, the earlier owed ones are skipped, later ones on time), all_at_once (every owed "
            "stage at the resume)."
        ),
    ] = "spaced"
    promise_grace: Annotated[
        str,
        Field(
            description="A promise's deadline is the end of its promised date in the customer's time zone plus this.",
            json_schema_extra=_DURATION_FIELD,
        ),
    ] = "P2D"

    @field_validator("promise_grace")
    @classmethod
    def _grace(cls, text: str) -> str:
        return _duration(text, positive=True)


class InstalmentReminderDocument(BaseModel):
    """A reminder of each instalment of a payment plan."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[
        str,
        Field(
            pattern=r"^[a-z][a-z0-9_]{0,29}$",
            description="The template; instalment n's stage is instalment_<n>_<name without 'instalment_'>.",
        ),
    ]
    offset: Annotated[
        str,
        Field(description="From the instalment's due date at send_time: -P3D, P1D.", json_schema_extra=_DURATION_FIELD),
    ]

    @field_validator("offset")
    @classmethod
    def _offset(cls, text: str) -> str:
        return _duration(text)


class PaymentPlansDocument(BaseModel):
    """Instalment reminders and the grace before a missed instalment breaks a plan."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    grace: Annotated[
        str,
        Field(
            description="An instalment not covered by the end of its due date (customer's zone) plus this is missed.",
            json_schema_extra=_DURATION_FIELD,
        ),
    ] = "P3D"
    reminders: Annotated[list[InstalmentReminderDocument], Field(max_length=5)] = [
        InstalmentReminderDocument(name="instalment_pre_due", offset="-P3D"),
        InstalmentReminderDocument(name="instalment_overdue", offset="P1D"),
    ]
    channels: Annotated[list[Channel], Field(min_length=1, json_schema_extra={"uniqueItems": True})] = ["email"]

    @field_validator("grace")
    @classmethod
    def _grace(cls, text: str) -> str:
        return _duration(text, positive=True)

    @field_validator("reminders")
    @classmethod
    def _reminders(cls, reminders: list[InstalmentReminderDocument]) -> list[InstalmentReminderDocument]:
        if len({r.name for r in reminders}) != len(reminders):
            raise problem("names a reminder twice")
        return reminders

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise problem("lists a channel twice")
        return channels


@dataclass(frozen=True)
class InstalmentReminder:
    name: str  # the template
    offset: Duration
