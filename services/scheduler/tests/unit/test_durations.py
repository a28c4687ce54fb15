from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dunning_scheduler.durations import Duration, DurationError, parse_duration

pytestmark = pytest.mark.unit
UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("P3D", Duration(days=3), id="days"),
        pytest.param("-P3D", Duration(negative=True, days=3), id="negative-days"),
        pytest.param("P2W", Duration(weeks=2), id="weeks"),
        pytest.param("PT5S", Duration(seconds=Decimal(5)), id="seconds"),
        pytest.param("PT0.5S", Duration(seconds=Decimal("0.5")), id="fractional-seconds"),
        pytest.param("PT1H30M", Duration(hours=1, minutes=30), id="hours-minutes"),
        pytest.param(
            "P1Y2M3DT4H5M6S",
            Duration(years=1, months=2, days=3, hours=4, minutes=5, seconds=Decimal(6)),
            id="everything",
        ),
        pytest.param("P1M", Duration(months=1), id="month-not-minute"),
        pytest.param("PT1M", Duration(minutes=1), id="minute-not-month"),
        pytest.param("P0D", Duration(), id="zero"),
    ],
)
def test_parses(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("P", id="no-components"),
        pytest.param("PT", id="empty-time-part"),
        pytest.param("P1DT", id="dangling-T"),
        pytest.param("3D", id="no-P"),
        pytest.param("P3d", id="lower-case"),
        pytest.param("P1.5D", id="fraction-in-days"),
        pytest.param("+P1D", id="plus-sign"),
        pytest.param("PT5S ", id="trailing-space"),
        pytest.param("P1D1Y", id="wrong-order"),
        pytest.param("1 day", id="prose"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_refuses(text):
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    "anchor, text, expected",
    [
        pytest.param(
            datetime(2026, 3, 1, 12, tzinfo=UTC), "PT5S", datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC), id="seconds"
        ),
        pytest.param(
            datetime(2026, 3, 1, 12, tzinfo=UTC), "-P3D", datetime(2026, 2, 26, 12, tzinfo=UTC), id="before-anchor"
        ),
        pytest.param(
            datetime(2026, 1, 31, 9, tzinfo=UTC), "P1M", datetime(2026, 2, 28, 9, tzinfo=UTC), id="month-end-clamped"
        ),
        pytest.param(
            datetime(2028, 1, 31, 9, tzinfo=UTC), "P1M", datetime(2028, 2, 29, 9, tzinfo=UTC), id="leap-february"
        ),
        pytest.param(datetime(2026, 2, 28, 9, tzinfo=UTC), "P1Y", datetime(2027, 2, 28, 9, tzinfo=UTC), id="year"),
        # 9:00 Berlin stays 9:00 Berlin across the end of summer time (25 Oct 2026): 07:00Z then 08:00Z.
        pytest.param(
            datetime(2026, 10, 20, 9, tzinfo=BERLIN),
            "P7D",
            datetime(2026, 10, 27, 8, tzinfo=UTC),
            id="days-keep-wall-clock-across-dst",
        ),
        # Elapsed hours do not: 24 hours after 09:00 on the day before the change is 08:00 local.
        pytest.param(
            datetime(2026, 10, 24, 9, tzinfo=BERLIN),
            "PT24H",
            datetime(2026, 10, 25, 7, tzinfo=UTC),
            id="hours-are-elapsed-time",
        ),
    ],
)
def test_adds_to_an_anchor(anchor, text, expected):
    assert parse_duration(text).add_to(anchor) == expected


def test_nominal_order_puts_a_month_after_four_weeks():
    assert parse_duration("P1M").nominal_seconds() > parse_duration("P4W").nominal_seconds()
    assert parse_duration("-P1D").nominal_seconds() < parse_duration("PT0S").nominal_seconds()
