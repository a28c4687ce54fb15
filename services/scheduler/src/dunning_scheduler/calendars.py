"""Working-day calendars: which local dates a customer can be chased on, and counting working days.

A `WorkingCalendar` is the tenant's working weekdays, the public holidays of one country (and
subdivision: Bavaria keeps Epiphany, Berlin does not) and the tenant's own closure days. The public
holidays come from the `holidays` package (a kept library of every country's rules, rather than a
hand-written list), cached per (country, subdivision, year): planning asks for them on its hot path.
`EVERY_DAY` (all seven days, no holidays) is the calendar of a tenant without settings.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property, lru_cache

import holidays

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ROLL_DIRECTIONS = ("next", "previous", "keep")
_MAX_SCAN = 3660  # a calendar with working days always finds one within ten years


class CalendarError(ValueError):
    """A country or subdivision the holidays library does not know."""


@lru_cache(maxsize=4096)
def public_holidays(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    """The public holidays of a country (and subdivision) in a year: {date: name in English}. Cached."""
    try:
        found = holidays.country_holidays(country, subdiv=subdivision, years=year, language="en_US")
    except NotImplementedError as exc:
        raise CalendarError(str(exc)) from None
    return dict(found)


def known_region(country: str, subdivision: str | None = None) -> str | None:
    """None when the holidays library knows the country (and subdivision), else words why not."""
    try:
        public_holidays(country, subdivision, 2026)
    except CalendarError:
        if subdivision is not None and known_region(country) is None:
            return f"unknown subdivision {subdivision!r} of {country}"
        return f"unknown country {country!r}"
    return None


@dataclass(frozen=True)
class WorkingCalendar:
    """Working weekdays (0 = Monday), a country's public holidays and the tenant's closure days."""

    working_days: frozenset[int]
    country: str | None
    subdivision: str | None
    closures: frozenset[date]

    @cached_property
    def key(self) -> tuple:
        """Hashable identity, for caches of instants computed with this calendar."""
        return (self.working_days, self.country, self.subdivision, self.closures)

    @cached_property
    def every_day(self) -> bool:
        """True when no day is ever non-working (nothing moves)."""
        return len(self.working_days) == 7 and self.country is None and not self.closures

    def non_working_reason(self, day: date) -> str | None:
        """None for a working day; else in words why not: "Saturday", "Christmas Day (DE)", "closure day"."""
        if day.weekday() not in self.working_days:
            return DAY_NAMES[day.weekday()]
        if day in self.closures:
            return "closure day"
        if self.country is not None:
            name = public_holidays(self.country, self.subdivision, day.year).get(day)
            if name is not None:
                region = self.country if self.subdivision is None else f"{self.country}-{self.subdivision}"
                return f"{name} ({region})"
        return None

    def is_working(self, day: date) -> bool:
        return self.non_working_reason(day) is None

    def add_working_days(self, day: date, n: int) -> date:
        """The date n working days after `day` (before it when n < 0); 0 is `day` itself."""
        step = timedelta(days=1 if n > 0 else -1)
        remaining = abs(n)
        scanned = 0
        while remaining:
            day += step
            scanned += 1
            if self.is_working(day):
                remaining -= 1
            elif scanned > _MAX_SCAN * (abs(n) + 1):
                raise CalendarError("the calendar has no working day")
        return day

    def roll(self, day: date, direction: str) -> date:
        """`day` if it is a working day (or direction "keep"), else the next or previous working day."""
        if direction == "keep" or self.is_working(day):
            return day
        step = timedelta(days=1 if direction == "next" else -1)
        for _ in range(_MAX_SCAN):
            day += step
            if self.is_working(day):
                return day
        raise CalendarError("the calendar has no working day")


EVERY_DAY = WorkingCalendar(frozenset(range(7)), None, None, frozenset())


def weekdays_text(days: frozenset[int]) -> str:
    """Weekdays in words, ranges joined: "Mon–Fri", "Mon–Wed, Sat"."""
    ordered = sorted(days)
    runs: list[list[int]] = []
    for d in ordered:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    names = [DAY_NAMES[r[0]][:3] if len(r) == 1 else f"{DAY_NAMES[r[0]][:3]}–{DAY_NAMES[r[-1]][:3]}" for r in runs]
    return ", ".join(names)
