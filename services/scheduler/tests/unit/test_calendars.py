from datetime import date

import pytest

from dunning_scheduler.calendars import EVERY_DAY, WorkingCalendar, known_region, weekdays_text

pytestmark = pytest.mark.unit
WEEKDAYS = frozenset(range(5))
GERMANY = WorkingCalendar(WEEKDAYS, "DE", None, frozenset())
BAVARIA = WorkingCalendar(WEEKDAYS, "DE", "BY", frozenset())
BERLIN = WorkingCalendar(WEEKDAYS, "DE", "BE", frozenset())


@pytest.mark.parametrize(
    ("calendar", "day", "reason"),
    [
        pytest.param(GERMANY, date(2026, 12, 25), "Christmas Day (DE)", id="christmas_in_germany"),
        pytest.param(BAVARIA, date(2026, 1, 6), "Epiphany (DE-BY)", id="epiphany_in_bavaria"),
        pytest.param(BERLIN, date(2026, 1, 6), None, id="no_epiphany_in_berlin"),
        pytest.param(GERMANY, date(2026, 12, 26), "Saturday", id="a_weekend_day_is_named_by_its_weekday"),
        pytest.param(GERMANY, date(2026, 12, 28), None, id="an_ordinary_monday"),
        pytest.param(EVERY_DAY, date(2026, 12, 25), None, id="no_calendar_every_day_works"),
        pytest.param(
            WorkingCalendar(WEEKDAYS, None, None, frozenset({date(2026, 12, 31)})),
            date(2026, 12, 31),
            "closure day",
            id="the_tenants_closure_day",
        ),
    ],
)
def test_non_working_reason(calendar, day, reason):
    assert calendar.non_working_reason(day) == reason
    assert calendar.is_working(day) is (reason is None)


@pytest.mark.parametrize(
    ("day", "direction", "rolled"),
    [
        pytest.param(date(2026, 12, 25), "next", date(2026, 12, 28), id="christmas_rolls_past_the_weekend"),
        pytest.param(date(2026, 12, 25), "previous", date(2026, 12, 24), id="christmas_rolls_back"),
        pytest.param(date(2026, 12, 26), "previous", date(2026, 12, 24), id="saturday_back_over_the_holiday"),
        pytest.param(date(2026, 12, 25), "keep", date(2026, 12, 25), id="keep_stays"),
        pytest.param(date(2026, 12, 23), "next", date(2026, 12, 23), id="a_working_day_stays"),
    ],
)
def test_roll(day, direction, rolled):
    assert GERMANY.roll(day, direction) == rolled


@pytest.mark.parametrize(
    ("calendar", "day", "n", "result"),
    [
        pytest.param(GERMANY, date(2026, 11, 27), 1, date(2026, 11, 30), id="friday_plus_one_is_monday"),
        pytest.param(GERMANY, date(2026, 11, 30), -1, date(2026, 11, 27), id="monday_minus_one_is_friday"),
        pytest.param(GERMANY, date(2026, 12, 23), 3, date(2026, 12, 29), id="across_christmas_and_the_weekend"),
        pytest.param(BAVARIA, date(2026, 1, 5), 1, date(2026, 1, 7), id="across_epiphany_in_bavaria"),
        pytest.param(BERLIN, date(2026, 1, 5), 1, date(2026, 1, 6), id="epiphany_works_in_berlin"),
        pytest.param(GERMANY, date(2026, 12, 26), 0, date(2026, 12, 26), id="zero_is_the_day_itself"),
        pytest.param(EVERY_DAY, date(2026, 12, 23), 5, date(2026, 12, 28), id="every_day_counts_calendar_days"),
        pytest.param(
            WorkingCalendar(WEEKDAYS, None, None, frozenset({date(2026, 12, 24)})),
            date(2026, 12, 23),
            1,
            date(2026, 12, 25),
            id="a_closure_day_does_not_count",
        ),
    ],
)
def test_add_working_days(calendar, day, n, result):
    assert calendar.add_working_days(day, n) == result


def test_regions_the_library_does_not_know_are_named():
    assert known_region("DE", "BY") is None
    assert known_region("XX") == "unknown country 'XX'"
    assert known_region("DE", "ZZ") == "unknown subdivision 'ZZ' of DE"


def test_weekdays_in_words():
    assert weekdays_text(WEEKDAYS) == "Mon–Fri"
    assert weekdays_text(frozenset({0, 1, 2, 5})) == "Mon–Wed, Sat"
