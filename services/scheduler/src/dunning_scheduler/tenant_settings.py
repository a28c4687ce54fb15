"""A tenant's settings (GET/PUT /v1/settings, versioned): its working calendar, send window, contact
caps and consolidation. Without settings every one of them is off, so behaviour is exactly as before.

    {
      "calendar": {"working_days": ["mon", ..., "fri"],   default all seven
                   "holidays": "customer",                none (default) | customer | tenant
                   "country": "DE", "subdivision": "BY",  the tenant's default region (optional)
                   "closures": ["2026-12-24"]},           the tenant's own closure days
      "send_window": {"days": ["mon", ..., "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"},
      "contact_caps": {"max_reminders": 3, "period": "P7D", "quiet_period": "P2D"},
      "consolidation": {"enabled": true}
    }

`holidays` says whose public holidays count: none; the customer's country/subdivision (from the
customer data, else the region of its locale, else the tenant's); or always the tenant's. The
tenant's closure days always count. `TenantSettingsDocument` validates (errors name the field, e.g.
`send_window.start`); `parse_settings` compiles it to `TenantSettings`, the form planning and firing use.
"""

from dataclasses import dataclass, field
from datetime import date, time
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dunning.contracts import Customer
from dunning_scheduler.calendars import WEEKDAYS, WorkingCalendar, known_region
from dunning_scheduler.durations import DURATION_SHAPE, Duration, DurationError, parse_duration
from dunning_scheduler.windows import SendWindow

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: list[Weekday] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
HOLIDAY_MODES = ("none", "customer", "tenant")
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
_DAY = 86400

EXAMPLE_SETTINGS: dict[str, Any] = {
    "calendar": {
        "working_days": ["mon", "tue", "wed", "thu", "fri"],
        "holidays": "customer",
        "country": "DE",
        "subdivision": "BY",
        "closures": ["2026-12-24", "2026-12-31"],
    },
    "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"},
    "contact_caps": {"max_reminders": 3, "period": "P7D", "quiet_period": "P2D"},
    "consolidation": {"enabled": True},
}


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("settings", message)


def _days(days: list[str]) -> list[str]:
    if len(set(days)) != len(days):
        raise _problem("lists a day twice")
    return sorted(days, key=WEEKDAYS.index)


def _elapsed(text: str, *, at_most_days: int) -> str:
    """A non-negative ISO 8601 duration of days/hours/minutes/seconds (no months or years)."""
    try:
        duration = parse_duration(text)
    except DurationError as exc:
        raise _problem(str(exc)) from None
    if duration.negative or duration.years or duration.months:
        raise _problem('must be a non-negative duration in weeks, days or time units, such as "P7D" or "PT1H"')
    if duration.nominal_seconds() > at_most_days * _DAY:
        raise _problem(f"must be at most {at_most_days} days")
    return text


class CalendarDocument(BaseModel):
    """Which local dates are working days."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    working_days: Annotated[list[Weekday], Field(min_length=1, description="Working weekdays.")] = ALL_DAYS
    holidays: Annotated[
        Literal["none", "customer", "tenant"],
        Field(
            description="Whose public holidays count: none; the customer's region (else the tenant's); the tenant's."
        ),
    ] = "none"
    country: Annotated[
        str | None, Field(pattern=r"^[A-Z]{2}$", description="The tenant's ISO 3166-1 alpha-2 country.")
    ] = None
    subdivision: Annotated[
        str | None,
        Field(pattern=r"^[A-Z0-9]{1,3}$", description="The tenant's ISO 3166-2 subdivision, without the country."),
    ] = None
    closures: Annotated[list[str], Field(max_length=366, description="The tenant's own closure days, YYYY-MM-DD.")] = []

    _days = field_validator("working_days")(classmethod(lambda cls, v: _days(v)))

    @field_validator("closures")
    @classmethod
    def _closures(cls, closures: list[str]) -> list[str]:
        for text in closures:
            try:
                date.fromisoformat(text)
                if len(text) != 10:
                    raise ValueError
            except ValueError:
                raise _problem(f"{text!r} is not a date YYYY-MM-DD") from None
        return sorted(set(closures))

    @model_validator(mode="after")
    def _region(self) -> "CalendarDocument":
        if self.subdivision is not None and self.country is None:
            raise PydanticCustomError("settings_at", "{errors}", {"errors": [("subdivision", "needs a country")]})
        if self.country is not None:
            problem = known_region(self.country, self.subdivision)
            if problem is not None:
                where = "subdivision" if "subdivision" in problem else "country"
                raise PydanticCustomError("settings_at", "{errors}", {"errors": [(where, problem)]})
        if self.holidays == "tenant" and self.country is None:
            raise PydanticCustomError(
                "settings_at", "{errors}", {"errors": [("country", 'is required with holidays "tenant"')]}
            )
        return self


class SendWindowDocument(BaseModel):
    """The local hours a customer may be contacted (in the customer's zone; openings on working days only)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    days: Annotated[list[Weekday], Field(min_length=1, description="Window days.")] = ALL_DAYS[:5]
    start: Annotated[str, Field(pattern=_CLOCK, description="Opening time HH:MM or HH:MM:SS (inclusive).")]
    end: Annotated[str, Field(pattern=_CLOCK, description="Closing time HH:MM or HH:MM:SS (exclusive), after start.")]
    spread: Annotated[
        str,
        Field(
            description="Reminders moved to an opening are spread over its first part (stable per customer).",
            json_schema_extra={"pattern": DURATION_SHAPE},
        ),
    ] = "PT0S"

    _days = field_validator("days")(classmethod(lambda cls, v: _days(v)))

    @field_validator("spread")
    @classmethod
    def _spread(cls, text: str) -> str:
        return _elapsed(text, at_most_days=1)

    def normalised(self) -> dict[str, Any]:
        """As stored and shown: every default written out."""
        return self.model_dump(mode="json")

    @model_validator(mode="after")
    def _order(self) -> "SendWindowDocument":
        if _clock(self.end) <= _clock(self.start):
            raise PydanticCustomError("settings_at", "{errors}", {"errors": [("end", "must be after start")]})
        return self


class ContactCapsDocument(BaseModel):
    """At most `max_reminders` contacts of a customer per rolling `period`; `quiet_period` between two."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_reminders: Annotated[int | None, Field(ge=1, le=1000)] = None
    period: Annotated[str | None, Field(json_schema_extra={"pattern": DURATION_SHAPE})] = None
    quiet_period: Annotated[str | None, Field(json_schema_extra={"pattern": DURATION_SHAPE})] = None

    @field_validator("period", "quiet_period")
    @classmethod
    def _duration(cls, text: str | None) -> str | None:
        return None if text is None else _elapsed(text, at_most_days=366)

    @model_validator(mode="after")
    def _pair(self) -> "ContactCapsDocument":
        if (self.max_reminders is None) != (self.period is None):
            missing = "period" if self.period is None else "max_reminders"
            raise PydanticCustomError(
                "settings_at", "{errors}", {"errors": [(missing, "max_reminders and period go together")]}
            )
        return self


class ConsolidationDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: Annotated[bool, Field(description="One notice per customer and channel for stages due together.")] = False


class TenantSettingsDocument(BaseModel):
    """A tenant's settings document (PUT /v1/settings; `settings` in the answers)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra={"examples": [EXAMPLE_SETTINGS]}
    )

    calendar: CalendarDocument = CalendarDocument()
    send_window: SendWindowDocument | None = None
    contact_caps: ContactCapsDocument | None = None
    consolidation: ConsolidationDocument = ConsolidationDocument()

    def normalised(self) -> dict[str, Any]:
        """The document as stored and shown: every default written out."""
        return self.model_dump(mode="json")


class CustomerWindowDocument(BaseModel):
    """A customer's own send window (PUT /v1/settings/customers/{customer_id}); null removes it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"examples": [{"send_window": {"days": ["mon", "wed"], "start": "10:00", "end": "12:00"}}]},
    )

    send_window: SendWindowDocument | None


class SettingsError(ValueError):
    """Settings (or a segment document) that are not valid; `errors` name each offending field."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))
        self.errors = errors

    @classmethod
    def from_validation(cls, exc: ValidationError, *, prefix: str = "") -> "SettingsError":
        return cls(field_errors(exc, prefix=prefix))


_MESSAGES = {
    "working_days": "must be a non-empty list of mon, tue, wed, thu, fri, sat, sun",
    "days": "must be a non-empty list of mon, tue, wed, thu, fri, sat, sun",
    "holidays": f"must be one of {', '.join(HOLIDAY_MODES)}",
    "country": "must be an ISO 3166-1 alpha-2 country code such as DE",
    "subdivision": "must be an ISO 3166-2 subdivision code such as BY",
    "closures": "must be a list of dates YYYY-MM-DD",
    "start": 'must be a local time HH:MM or HH:MM:SS such as "08:00"',
    "end": 'must be a local time HH:MM or HH:MM:SS such as "17:00"',
    "spread": 'must be an ISO 8601 duration such as "PT1H"',
    "period": 'must be an ISO 8601 duration such as "P7D"',
    "quiet_period": 'must be an ISO 8601 duration such as "P2D"',
    "max_reminders": "must be a whole number from 1 to 1000",
    "enabled": "must be true or false",
}


def field_errors(
    exc: ValidationError, *, prefix: str = "", messages: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """pydantic's errors as [{field, message}], each naming its field (dotted path, list indexes)."""
    table = {**_MESSAGES, **(messages or {})}
    errors: list[dict[str, str]] = []
    for e in exc.errors(include_url=False):
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if prefix:
            loc = [prefix, *loc]
        if e["type"].endswith("_at"):  # a model check naming sub-fields itself
            errors += [{"field": ".".join([*loc, f]), "message": m} for f, m in e["ctx"]["errors"]]
            continue
        name = loc[-1] if loc else ""
        if e["type"] in ("settings", "segments"):
            message = e["msg"]
        elif not loc:
            message = "must be a JSON object"
        elif e["type"] == "extra_forbidden":
            message = "unknown key"
        elif e["type"] == "missing":
            message = "is required"
        elif name.isdigit() and len(loc) > 1 and loc[-2] in table:
            message = table[loc[-2]]
        elif e["type"] in ("model_type", "dict_type", "model_attributes_type"):
            message = "must be an object"
        else:
            message = table.get(name, e["msg"])
        errors.append({"field": ".".join(loc) or "(body)", "message": message})
    return errors


@dataclass(frozen=True)
class ContactCaps:
    max_reminders: int | None
    period: Duration | None
    quiet_period: Duration | None


@dataclass(frozen=True)
class TenantSettings:
    """Valid settings, compiled for planning and firing."""

    calendar_mode: str  # none | customer | tenant
    working_days: frozenset[int]
    country: str | None
    subdivision: str | None
    closures: frozenset[date]
    send_window: SendWindow | None
    caps: ContactCaps | None
    consolidation: bool
    version: int = 0
    document: dict = field(default_factory=dict, compare=False)


def _clock(text: str) -> time:
    return time.fromisoformat(text)


def _window(valid: SendWindowDocument) -> SendWindow:
    spread = parse_duration(valid.spread).nominal_seconds()
    return SendWindow(
        days=frozenset(WEEKDAYS.index(d) for d in valid.days),
        start=_clock(valid.start),
        end=_clock(valid.end),
        spread_seconds=int(spread),
    )


def parse_window(document: Any, *, prefix: str = "send_window") -> SendWindow:
    """A send window document (a customer's override) compiled, or SettingsError naming `send_window.<field>`."""
    try:
        valid = SendWindowDocument.model_validate(document)
    except ValidationError as exc:
        raise SettingsError.from_validation(exc, prefix=prefix) from None
    return _window(valid)


def parse_settings(document: Any, version: int = 0) -> TenantSettings:
    """Validate and compile a settings document, or raise SettingsError naming every problem."""
    try:
        valid = TenantSettingsDocument.model_validate(document)
    except ValidationError as exc:
        raise SettingsError.from_validation(exc) from None
    caps = valid.contact_caps
    compiled_caps = None
    if caps is not None and (caps.max_reminders is not None or caps.quiet_period is not None):
        compiled_caps = ContactCaps(
            max_reminders=caps.max_reminders,
            period=None if caps.period is None else parse_duration(caps.period),
            quiet_period=None if caps.quiet_period is None else parse_duration(caps.quiet_period),
        )
    calendar = valid.calendar
    return TenantSettings(
        calendar_mode=calendar.holidays,
        working_days=frozenset(WEEKDAYS.index(d) for d in calendar.working_days),
        country=calendar.country,
        subdivision=calendar.subdivision,
        closures=frozenset(date.fromisoformat(d) for d in calendar.closures),
        send_window=None if valid.send_window is None else _window(valid.send_window),
        caps=compiled_caps,
        consolidation=valid.consolidation.enabled,
        version=version,
        document=valid.normalised(),
    )


DEFAULT_SETTINGS = parse_settings({})


def country_of(customer: Customer) -> tuple[str | None, str | None]:
    """The customer's (country, subdivision): its own data, else the region of its locale (de-DE -> DE)."""
    country = getattr(customer, "country", None)
    if country:
        subdivision = getattr(customer, "subdivision", None)
        return country.upper(), (subdivision.upper() if subdivision else None)
    locale = (getattr(customer, "locale", None) or "").replace("_", "-").split("-")
    if len(locale) >= 2 and len(locale[-1]) == 2 and locale[-1].isalpha():
        return locale[-1].upper(), None
    return None, None


@lru_cache(maxsize=8192)
def _calendar(
    working_days: frozenset[int], country: str | None, subdivision: str | None, closures: frozenset[date]
) -> WorkingCalendar:
    return WorkingCalendar(working_days, country, subdivision, closures)


def calendar_for(settings: TenantSettings, customer: Customer) -> WorkingCalendar:
    """The customer's working calendar under the tenant's settings (the tenant's working days and closures,
    and the public holidays of the customer's region, or of the tenant's, as `holidays` says)."""
    country, subdivision = None, None
    if settings.calendar_mode == "customer":
        country, subdivision = country_of(customer)
        if country is not None and known_region(country, subdivision) is not None:
            # An unknown subdivision: the country's holidays; an unknown country: the tenant's.
            country, subdivision = (country, None) if known_region(country) is None else (None, None)
    if settings.calendar_mode != "none" and country is None:
        country, subdivision = settings.country, settings.subdivision
    return _calendar(settings.working_days, country, subdivision, settings.closures)


def has_firing_rules(settings: TenantSettings) -> bool:
    """True when firing must apply rules (a window, caps or consolidation), not just fire what is due."""
    return settings.send_window is not None or settings.caps is not None or settings.consolidation
