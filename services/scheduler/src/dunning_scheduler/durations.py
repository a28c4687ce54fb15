"""ISO 8601 durations for policy offsets: `P3D`, `-P3D` (before the anchor), `P1M`, `PT5S`, `P1WT12H`.

Date parts (Y, M, W, D) are calendar arithmetic on the local wall clock of the anchor (so "P7D" after
09:00 Europe/Berlin is 09:00 Berlin a week later, across a DST change, and "P1M" after 31 January
is the last day of February); time parts (H, M, S) are elapsed time added to the resulting instant.
A leading `-` negates every part. Seconds may carry a fraction (`PT0.5S`).
"""

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property

_PATTERN = re.compile(
    r"(?P<sign>-)?P"
    r"(?:(?P<years>\d{1,4})Y)?(?:(?P<months>\d{1,5})M)?(?:(?P<weeks>\d{1,5})W)?(?:(?P<days>\d{1,6})D)?"
    r"(?:T(?:(?P<hours>\d{1,7})H)?(?:(?P<minutes>\d{1,9})M)?(?:(?P<seconds>\d{1,11}(?:\.\d{1,6})?)S)?)?"
)
# The same shape as a JSON Schema pattern, for the API's documentation (ECMA regex, no named groups);
# the parser above stays the rule (it also refuses an empty "P"/"PT" and out-of-range values).
DURATION_SHAPE = (
    r"^-?P(\d{1,4}Y)?(\d{1,5}M)?(\d{1,5}W)?(\d{1,6}D)?"
    r"(T(\d{1,7}H)?(\d{1,9}M)?(\d{1,11}(\.\d{1,6})?S)?)?$"
)
# Nominal lengths, only to compare offsets (policy validation), never to compute a date.
_NOMINAL_DAY = 86400
_NOMINAL_MONTH = Decimal("2629746")  # 365.2425 days / 12


class DurationError(ValueError):
    """Not an ISO 8601 duration this scheduler understands."""


@dataclass(frozen=True)
class Duration:
    negative: bool = False
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: Decimal = Decimal(0)

    @property
    def _sign(self) -> int:
        return -1 if self.negative else 1

    def nominal_seconds(self) -> Decimal:
        """An approximate length (months of 30.44 days) for ordering offsets."""
        total = (
            Decimal(self.years * 12 + self.months) * _NOMINAL_MONTH
            + (self.weeks * 7 + self.days) * _NOMINAL_DAY
            + self.hours * 3600
            + self.minutes * 60
            + self.seconds
        )
        return self._sign * total

    @property
    def is_overdue(self) -> bool:
        """True for an offset after the anchor (> 0): an overdue stage, counted from the due date + grace."""
        return self.nominal_seconds() > 0

    @property
    def whole_days(self) -> int | None:
        """The signed number of days when the duration is only weeks and days, else None."""
        if self.years or self.months or self.hours or self.minutes or self.seconds:
            return None
        return self._sign * (self.weeks * 7 + self.days)

    def time_delta(self) -> timedelta:
        """The elapsed-time part (H, M, S), signed."""
        return self._steps[2]

    @cached_property
    def _steps(self) -> tuple[int, int, timedelta]:
        """(months, days, elapsed time), signed: computed once per duration."""
        return (
            self._sign * (self.years * 12 + self.months),
            self._sign * (self.weeks * 7 + self.days),
            self._sign * timedelta(hours=self.hours, minutes=self.minutes, seconds=float(self.seconds)),
        )

    def add_to(self, anchor: datetime) -> datetime:
        """The instant `anchor + self`; `anchor` must be aware, in the zone whose wall clock counts."""
        if anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")
        months, days, elapsed = self._steps
        local = anchor.replace(tzinfo=None)
        if months:
            year, month, day = _shift_months(local.date(), months)
            local = local.replace(year=year, month=month, day=day)
        local += timedelta(days=days)
        # Re-attach the zone to the new wall-clock time (its own UTC offset, after a DST change).
        moved = local.replace(tzinfo=anchor.tzinfo, fold=0)
        return moved.astimezone(UTC) + elapsed


def _shift_months(day: date, months: int) -> tuple[int, int, int]:
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise DurationError("offset moves the date out of range")
    last = calendar.monthrange(year, month + 1)[1]
    return year, month + 1, min(day.day, last)


def parse_duration(text: object) -> Duration:
    if not isinstance(text, str):
        raise DurationError('must be an ISO 8601 duration string such as "P7D" or "-P3D"')
    match = _PATTERN.fullmatch(text)
    if match is None or text.endswith("T"):
        raise DurationError(f'{text!r} is not an ISO 8601 duration such as "P7D", "-P3D" or "PT5S"')
    parts = match.groupdict()
    if all(parts[k] is None for k in ("years", "months", "weeks", "days", "hours", "minutes", "seconds")):
        raise DurationError(f"{text!r} has no components")
    return Duration(
        negative=parts["sign"] == "-",
        years=int(parts["years"] or 0),
        months=int(parts["months"] or 0),
        weeks=int(parts["weeks"] or 0),
        days=int(parts["days"] or 0),
        hours=int(parts["hours"] or 0),
        minutes=int(parts["minutes"] or 0),
        seconds=Decimal(parts["seconds"] or 0),
    )
