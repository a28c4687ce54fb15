"""Dunning policies are data: a versioned JSON document per tenant, validated strictly.

`PolicyDocument` is the one definition of a document: it validates it (unknown keys are refused;
every error names its field, e.g. `stages.2.offset`) and it is the schema the API documents. A
valid document compiles to a `Policy`, the form planning uses (parsed durations, defaults filled):

    {
      "id": "pol_standard_b2b",          optional, shown in DunningPlanned.policy_id
      "description": "Our B2B terms",    optional
      "anchor": "due_date",              "due_date" (default) or "issued_at"
      "send_time": "09:00",              HH:MM on the customer's wall clock (due_date anchor only)
      "days": "calendar",                calendar | business: whole-day offsets count working days
      "non_working_day": "next",         next | previous | keep: a stage on a non-working day moves
      "grace": "P0D",                    overdue stages (offset > 0) count from the due date + grace
      "minimum_balance": {"EUR": "10.00"},   per currency; optional
      "below_minimum": "skip",           skip: no stage | pre_due_only: only stages with offset <= 0
      "interest": {"annual_rate": "8.00", "day_count": "ACT/365F"},   optional (see policy_charges)
      "stages": [                        0..20 stages, offsets strictly increasing, names unique
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D", "template": "soft", "channels": ["email"],
         "late_fee": {"EUR": "40.00"}, "charge_interest": true},   both optional
        ...
      ],
      "pauses": {"resume": "spaced", "promise_grace": "P2D"},        optional, these are the defaults
      "payment_plans": {"grace": "P3D", "channels": ["email"],       optional, these are the defaults
                        "reminders": [{"name": "instalment_pre_due", "offset": "-P3D"},
                                      {"name": "instalment_overdue", "offset": "P1D"}]}
    }

`offset` is an ISO 8601 duration from the anchor (`-` = before it). `template` defaults to the
stage name, `channels` to ["email"]. With anchor "due_date" a stage's instant is the due date at
`send_time` in the customer's time zone plus the offset; with "issued_at" it is the invoice's
issued_at instant plus the offset (demos and tests use second offsets such as "PT5S").
`pauses.resume` says how stages owed during a pause are sent when it ends (see `pausing`);
the graces and instalment offsets may be seconds too (`PT10S`) for demos and chaos runs. The
`pauses` and `payment_plans` sections are in `policy_pauses`, the calendar keys in `policy_calendar`,
the charges (interest, minimum balance, late fees) in `policy_charges`; this module is the entry point.
New keys are written out only when not their default: older stored documents stay equal.
"""

from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from dunning_scheduler.durations import DURATION_SHAPE, DurationError, parse_duration
from dunning_scheduler.policy_calendar import CALENDAR_MESSAGES, CalendarKeys, whole_days
from dunning_scheduler.policy_charges import (
    CHARGE_MESSAGES,
    ChargeKeys,
    InterestDocument,
    StageCharges,
    decimals,
    interest_terms,
)
from dunning_scheduler.policy_model import Policy, Stage
from dunning_scheduler.policy_pauses import (
    MAX_OFFSET_SECONDS,
    PAUSES_MESSAGES,
    Channel,
    InstalmentReminder,
    InstalmentReminderDocument,
    PausesDocument,
    PaymentPlansDocument,
)
from dunning_scheduler.policy_pauses import (
    problem as _problem,
)

MAX_STAGES = 20
MAX_TIMERS = 50  # DunningPlanned carries at most 50 (stage, channel) entries
CHANNELS = ("email", "sms", "webhook", "letter", "call", "agency")
ANCHORS = ("due_date", "issued_at")
DEFAULT_POLICY_ID = "pol_default"
CUSTOM_POLICY_ID = "pol_custom"

DEFAULT_DOCUMENT: dict[str, Any] = {
    "id": DEFAULT_POLICY_ID,
    "description": "Built-in default: a courtesy note before the due date, three reminders, then collections.",
    "anchor": "due_date",
    "send_time": "09:00",
    "stages": [
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D"},
        {"name": "firm", "offset": "P7D"},
        {"name": "final", "offset": "P14D"},
        {"name": "collections", "offset": "P30D"},
    ],
    "pauses": {"resume": "spaced", "promise_grace": "P2D"},
    "payment_plans": {
        "grace": "P3D",
        "reminders": [
            {"name": "instalment_pre_due", "offset": "-P3D"},
            {"name": "instalment_overdue", "offset": "P1D"},
        ],
        "channels": ["email"],
    },
}


class StageDocument(StageCharges):
    """One stage of a policy document."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Unique within the policy.")]
    offset: Annotated[
        str,
        Field(
            description="ISO 8601 duration from the anchor; a leading '-' is before it: "
            "-P3D, P1D, P1M, PT5S. Within 10 years of the anchor.",
            json_schema_extra={"pattern": DURATION_SHAPE},
        ),
    ]
    template: Annotated[
        str | None, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$", description="Tone key; defaults to the stage name.")
    ] = None
    channels: Annotated[list[Channel], Field(min_length=1, json_schema_extra={"uniqueItems": True})] = ["email"]

    @field_validator("offset")
    @classmethod
    def _offset(cls, text: str) -> str:
        try:
            duration = parse_duration(text)
        except DurationError as exc:
            raise _problem(str(exc)) from None
        if abs(duration.nominal_seconds()) > MAX_OFFSET_SECONDS:
            raise _problem("must be within 10 years of the anchor")
        return text

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise _problem("lists a channel twice")
        return channels

    def normalised(self) -> dict[str, Any]:
        stage: dict[str, Any] = {
            "name": self.name,
            "offset": self.offset,
            "template": self.template or self.name,
            "channels": list(self.channels),
        }
        return {**stage, **self.stage_charges()}


class PolicyDocument(CalendarKeys, ChargeKeys):
    """A tenant's dunning policy document (PUT /v1/policy; `policy` in the answers)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra={"examples": [DEFAULT_DOCUMENT]}
    )

    id: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$", description="Shown as DunningPlanned.policy_id.")
    ] = CUSTOM_POLICY_ID
    description: Annotated[str | None, Field(max_length=500, exclude_if=lambda v: v is None)] = None
    anchor: Annotated[
        Literal["due_date", "issued_at"],
        Field(
            description="due_date: the due date at send_time in the customer's time zone; "
            "issued_at: the invoice's issued_at instant."
        ),
    ] = "due_date"
    send_time: Annotated[
        str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="Local time HH:MM (due_date anchor).")
    ] = "09:00"
    stages: Annotated[
        list[StageDocument],
        Field(
            max_length=MAX_STAGES,
            description=f"In strictly increasing offset order; unique names; at most {MAX_TIMERS} "
            "(stage, channel) pairs in all.",
        ),
    ]
    pauses: Annotated[PausesDocument, Field(description="How pauses end (resume mode, promise grace).")] = (
        PausesDocument()
    )
    payment_plans: Annotated[
        PaymentPlansDocument, Field(description="Instalment reminders and grace of payment plans.")
    ] = PaymentPlansDocument()

    @model_validator(mode="after")
    def _business(self) -> "PolicyDocument":
        if self.days != "business" or self.anchor == "issued_at":
            return self
        errors = [
            (f"stages.{index}.offset", "business days need whole-day offsets (days or weeks)")
            for index, stage in enumerate(self.stages)
            if not whole_days(parse_duration(stage.offset))
        ]
        if errors:
            raise PydanticCustomError("policy_stages", "{errors}", {"errors": errors})
        return self

    @field_validator("stages")
    @classmethod
    def _stages(cls, stages: list[StageDocument]) -> list[StageDocument]:
        errors = []
        seen: set[str] = set()
        previous: tuple[str, Decimal] | None = None
        for index, stage in enumerate(stages):
            if stage.name in seen:
                errors.append((f"stages.{index}.name", f"duplicate stage name {stage.name!r}"))
            seen.add(stage.name)
            nominal = parse_duration(stage.offset).nominal_seconds()
            if previous is not None and nominal <= previous[1]:
                errors.append(
                    (
                        f"stages.{index}.offset",
                        f"stages must be in increasing offset order: {stage.offset} is not after {previous[0]}",
                    )
                )
            previous = (stage.offset, nominal)
        timers = sum(len(s.channels) for s in stages)
        if timers > MAX_TIMERS:
            errors.append(("stages", f"at most {MAX_TIMERS} (stage, channel) pairs in all, got {timers}"))
        if errors:  # each names its own field: see PolicyError.from_validation
            raise PydanticCustomError("policy_stages", "{errors}", {"errors": errors})
        return stages

    def normalised(self) -> dict[str, Any]:
        """The document as stored and shown: every default written out."""
        document: dict[str, Any] = {
            "id": self.id,
            "anchor": self.anchor,
            "send_time": self.send_time,
            "stages": [s.normalised() for s in self.stages],
            "pauses": self.pauses.model_dump(),
            "payment_plans": self.payment_plans.model_dump(),
        }
        if self.description is not None:
            document["description"] = self.description
        # New keys only when not their default: an older document normalises as it always did.
        return {**document, **self.calendar_keys(), **self.charge_keys()}


class PolicyError(ValueError):
    """A document that is not a valid policy; `errors` name each offending field."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))
        self.errors = errors

    @classmethod
    def from_validation(cls, exc: ValidationError) -> "PolicyError":
        errors: list[dict[str, str]] = []
        for e in exc.errors(include_url=False):
            if e["type"] == "policy_stages":
                errors += [{"field": f, "message": m} for f, m in e["ctx"]["errors"]]
                continue
            loc = [str(p) for p in e["loc"]]
            if e["type"] == "policy_at":  # a section's check naming its own keys
                errors += [{"field": ".".join([*loc, f]), "message": m} for f, m in e["ctx"]["errors"]]
                continue
            errors.append({"field": ".".join(loc) or "(body)", "message": _message(loc, e)})
        return cls(errors)


# Messages for the standard constraint failures, by the field's name (pydantic's own would name the
# regular expression instead of saying what is allowed).
_MESSAGES = {
    "id": "must be 1-100 characters of letters, digits, '_', '.', ':' or '-'",
    "description": "must be a string of at most 500 characters",
    "anchor": f"must be one of {', '.join(ANCHORS)}",
    "send_time": 'must be a local time HH:MM such as "09:00"',
    "name": "is required: lower-case letters, digits and '_', starting with a letter, at most 40",
    "template": "must be lower-case letters, digits, '_', '.', '-', starting with a letter, at most 64",
    "channels": f"must be a non-empty list of {', '.join(CHANNELS)}",
    **CALENDAR_MESSAGES,
    **CHARGE_MESSAGES,
    **PAUSES_MESSAGES,
}
_MODEL_AT: dict[str, type[BaseModel]] = {
    "pauses": PausesDocument,
    "payment_plans": PaymentPlansDocument,
    "interest": InterestDocument,
}


def _message(loc: list[str], error: ErrorDetails) -> str:
    kind, name = error["type"], (loc[-1] if loc else "")
    if kind.startswith("policy"):
        return error["msg"]
    if not loc:
        return "a policy must be a JSON object"
    if kind == "extra_forbidden":
        model = _MODEL_AT.get(loc[0], StageDocument) if len(loc) > 1 else PolicyDocument
        if loc[0] == "payment_plans" and len(loc) > 3:
            model = InstalmentReminderDocument
        allowed = model.model_fields
        return f"unknown key; allowed: {', '.join(sorted(allowed))}"
    if name == "stages":
        if kind == "too_long":
            return f"at most {MAX_STAGES} stages, got {len(error['input'])}"
        return "is required: a list of stages (may be empty)"
    if len(loc) > 1 and loc[-2] in ("minimum_balance", "late_fee"):
        return 'must be a decimal string such as "10.00"'
    if name.isdigit() and len(loc) > 1 and loc[-2] == "reminders":
        return "a reminder must be an object with name and offset"
    if name == "offset":
        return (
            "is required: an ISO 8601 duration"
            if kind == "missing"
            else 'must be an ISO 8601 duration string such as "P7D" or "-P3D"'
        )
    if name.isdigit() and len(loc) > 1 and loc[-2] == "channels":
        return f"unknown channel {error['input']!r}; one of {', '.join(CHANNELS)}"
    if name.isdigit() and len(loc) > 1 and loc[-2] == "stages":
        return "a stage must be an object with name and offset"
    return _MESSAGES.get(name, error["msg"])


def parse_policy(document: Any, *, version: int = 1, is_default: bool = False) -> Policy:
    """Validate a document (`PolicyDocument`) and compile it, or raise PolicyError naming every problem."""
    try:
        valid = PolicyDocument.model_validate(document)
    except ValidationError as exc:
        raise PolicyError.from_validation(exc) from None
    normalised = valid.normalised()
    hours, minutes = map(int, valid.send_time.split(":"))
    stages = tuple(
        Stage(
            name=s["name"],
            offset=parse_duration(s["offset"]),
            offset_text=s["offset"],
            template=s["template"],
            channels=tuple(s["channels"]),
            late_fee=decimals(s.get("late_fee")),
            charge_interest=s.get("charge_interest", False),
        )
        for s in normalised["stages"]
    )
    policy_id = valid.id if "id" in valid.model_fields_set or not is_default else DEFAULT_POLICY_ID
    normalised["id"] = policy_id
    return Policy(
        policy_id=policy_id,
        anchor=valid.anchor,
        send_time=time(hours, minutes),
        stages=stages,
        document=normalised,
        version=version,
        is_default=is_default,
        resume_mode=valid.pauses.resume,
        promise_grace=parse_duration(valid.pauses.promise_grace),
        plan_grace=parse_duration(valid.payment_plans.grace),
        plan_reminders=tuple(
            InstalmentReminder(r.name, parse_duration(r.offset)) for r in valid.payment_plans.reminders
        ),
        plan_channels=tuple(valid.payment_plans.channels),
        days=valid.days,
        non_working_day=valid.non_working_day,
        grace=parse_duration(valid.grace),
        minimum_balance=decimals(valid.minimum_balance),
        below_minimum=valid.below_minimum,
        interest=interest_terms(valid.interest),
    )


DEFAULT_POLICY = parse_policy(DEFAULT_DOCUMENT, version=1, is_default=True)
