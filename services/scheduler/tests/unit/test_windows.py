from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dunning_scheduler.calendars import EVERY_DAY, WorkingCalendar
from dunning_scheduler.windows import SendWindow

pytestmark = pytest.mark.unit
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = SendWindow(frozenset(range(5)), time(8), time(17), 3600)
GERMANY = WorkingCalendar(frozenset(range(5)), "DE", None, frozenset())


def berlin(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        pytest.param(berlin(2026, 12, 1, 8), True, id="start_is_inside"),
        pytest.param(berlin(2026, 12, 1, 16, 59, 59), True, id="just_before_end"),
        pytest.param(berlin(2026, 12, 1, 17), False, id="end_is_exclusive"),
        pytest.param(berlin(2026, 12, 1, 7, 59), False, id="before_start"),
        pytest.param(berlin(2026, 12, 5, 10), False, id="saturday"),
        pytest.param(berlin(2026, 12, 25, 10), False, id="a_holiday_is_no_opening"),
    ],
)
def test_contains(instant, inside):
    assert OFFICE.contains(instant, BERLIN, GERMANY) is inside


def test_inside_the_window_nothing_moves():
    at = berlin(2026, 12, 1, 10).astimezone(UTC)
    assert OFFICE.place(at, BERLIN, GERMANY, "cus_1") == (at, None)
    assert OFFICE.next_opening(at, BERLIN, GERMANY) == at


def test_a_saturday_morning_moves_to_monday_with_a_stable_spread_inside_the_opening():
    saturday = berlin(2026, 12, 5, 7).astimezone(UTC)
    at, why = OFFICE.place(saturday, BERLIN, GERMANY, "cus_1")
    monday_8 = berlin(2026, 12, 7, 8).astimezone(UTC)
    assert monday_8 <= at < monday_8 + timedelta(hours=1)
    assert why == "Saturday 07:00 is outside the send window Mon–Fri 08:00–17:00 (Europe/Berlin)"
    assert OFFICE.place(saturday, BERLIN, GERMANY, "cus_1") == (at, why)  # stable per key
    others = {OFFICE.place(saturday, BERLIN, GERMANY, f"cus_{n}")[0] for n in range(20)}
    assert len(others) > 10  # spread, not all at 08:00:00
    assert all(monday_8 <= o < monday_8 + timedelta(hours=1) for o in others)


def test_an_evening_moves_to_the_next_morning_and_a_holiday_is_skipped():
    evening = berlin(2026, 12, 24, 18).astimezone(UTC)  # Thursday; 25 Dec is Christmas, then the weekend
    assert OFFICE.next_opening(evening, BERLIN, GERMANY) == berlin(2026, 12, 28, 8).astimezone(UTC)
    early = berlin(2026, 12, 1, 6).astimezone(UTC)
    assert OFFICE.next_opening(early, BERLIN, EVERY_DAY) == berlin(2026, 12, 1, 8).astimezone(UTC)


def test_the_spread_is_capped_by_a_short_opening():
    short = SendWindow(frozenset(range(7)), time(9), time(9, 0, 10), 3600)
    offsets = {short.spread_offset(f"cus_{n}") for n in range(100)}
    assert offsets <= set(range(9)) and len(offsets) > 1
    assert SendWindow(frozenset(range(7)), time(9), time(10), 0).spread_offset("cus_1") == 0


def test_the_end_of_the_opening():
    at = berlin(2026, 12, 1, 10).astimezone(UTC)
    assert OFFICE.end_of_opening(at, BERLIN) == berlin(2026, 12, 1, 17).astimezone(UTC)
    assert date(2026, 12, 1) == OFFICE.end_of_opening(at, BERLIN).astimezone(BERLIN).date()
