"""Send windows: the local hours in which a customer may be contacted (tenant settings, or a customer's
override), e.g. Mon–Fri 08:00–17:00 in the customer's zone.

An *opening* is one day's window on a day that is both a window day and a working day of the
customer's calendar; its end is exclusive. A reminder planned outside every opening moves to the next
opening plus a stable spread offset taken from a key (the customer), so a tenant's thousands of
reminders moved to Monday 08:00 do not all go in the same second — and a customer's reminders keep
going together. The offset comes from zlib.crc32, never Python's `hash` (salted per process: replicas
and restarts must agree).
"""

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from dunning_scheduler.calendars import DAY_NAMES, WorkingCalendar, weekdays_text

_MAX_SCAN = 3660


def clock_text(moment: time) -> str:
    """HH:MM, or HH:MM:SS when it has seconds."""
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


@dataclass(frozen=True)
class SendWindow:
    """Window days (0 = Monday), local start (inclusive) and end (exclusive), and the spread."""

    days: frozenset[int]
    start: time
    end: time
    spread_seconds: int

    @cached_property
    def key(self) -> tuple:
        """Hashable identity, for caches of instants computed with this window."""
        return (self.days, self.start, self.end, self.spread_seconds)

    @cached_property
    def length_seconds(self) -> int:
        """One opening's nominal length."""
        start = self.start.hour * 3600 + self.start.minute * 60 + self.start.second
        end = self.end.hour * 3600 + self.end.minute * 60 + self.end.second
        return end - start

    def describe(self, zone: ZoneInfo) -> str:
        """In words: "Mon–Fri 08:00–17:00 (Europe/Berlin)"."""
        return f"{weekdays_text(self.days)} {clock_text(self.start)}–{clock_text(self.end)} ({zone.key})"

    def _opens_on(self, day: date, calendar: WorkingCalendar) -> bool:
        return day.weekday() in self.days and calendar.is_working(day)

    def contains(self, instant: datetime, zone: ZoneInfo, calendar: WorkingCalendar) -> bool:
        """True when the instant falls in an opening (start inclusive, end exclusive)."""
        local = instant.astimezone(zone)
        return self.start <= local.time().replace(tzinfo=None) < self.end and self._opens_on(local.date(), calendar)

    def next_opening(self, instant: datetime, zone: ZoneInfo, calendar: WorkingCalendar) -> datetime:
        """The instant itself (in UTC) when inside an opening, else the start of the next opening (UTC)."""
        if self.contains(instant, zone, calendar):
            return instant.astimezone(UTC)
        local = instant.astimezone(zone)
        day = local.date()
        if local.time().replace(tzinfo=None) >= self.start:
            day += timedelta(days=1)
        for _ in range(_MAX_SCAN):
            if self._opens_on(day, calendar):
                return datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
            day += timedelta(days=1)
        raise ValueError("the send window never opens on a working day")

    def spread_offset(self, key: str) -> int:
        """A stable offset in [0, min(spread, opening length − 1 s)) seconds for `key`."""
        bound = min(self.spread_seconds, self.length_seconds - 1)
        if bound <= 0:
            return 0
        return zlib.crc32(key.encode()) % bound

    def place(
        self, instant: datetime, zone: ZoneInfo, calendar: WorkingCalendar, key: str
    ) -> tuple[datetime, str | None]:
        """(instant, None) when inside an opening; else (the next opening + the key's spread offset, words why)."""
        if self.contains(instant, zone, calendar):
            return instant, None
        opening = self.next_opening(instant, zone, calendar)
        return opening + timedelta(seconds=self.spread_offset(key)), self.outside_words(instant, zone, calendar)

    def outside_words(self, instant: datetime, zone: ZoneInfo, calendar: WorkingCalendar) -> str:
        """Why it is outside: "Saturday 07:00 is outside the send window Mon–Fri 08:00–17:00 (Europe/Berlin)"."""
        local = instant.astimezone(zone)
        when = f"{DAY_NAMES[local.weekday()]} {local.strftime('%H:%M')}"
        holiday = None if local.weekday() not in self.days else calendar.non_working_reason(local.date())
        if holiday is not None:
            when = f"{when} ({local.date().isoformat()}, {holiday})"
        return f"{when} is outside the send window {self.describe(zone)}"

    def end_of_opening(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The end (UTC) of the opening that contains `instant`: its local day at `end`."""
        local = instant.astimezone(zone)
        return datetime.combine(local.date(), self.end, tzinfo=zone).astimezone(UTC)
