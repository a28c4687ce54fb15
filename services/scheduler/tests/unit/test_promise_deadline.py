"""A promise's deadline: the end of the promised day in the customer's zone, or the instant promised,
plus the policy's grace counted on the customer's wall clock."""

from datetime import UTC, date, datetime

import pytest

from dunning_scheduler.pauser import end_of_day, with_grace
from dunning_scheduler.policy import parse_policy

pytestmark = pytest.mark.unit
STAGES = {"anchor": "due_date", "stages": [{"name": "soft", "offset": "P1D"}]}


def policy(grace: str):
    return parse_policy({**STAGES, "pauses": {"promise_grace": grace}})


@pytest.mark.parametrize(
    "due_by, zone, grace, deadline",
    [
        # 17:00 on Friday in Berlin (CEST), two days' grace: 17:00 on Sunday, after the clocks went back (CET)
        pytest.param("2026-10-23T15:00:00Z", "Europe/Berlin", "P2D", "2026-10-25T16:00:00Z", id="days-across-dst"),
        pytest.param("2026-12-11T08:00:00Z", "Asia/Tokyo", "PT2S", "2026-12-11T08:00:02Z", id="seconds"),
        pytest.param("2026-12-11T08:00:00Z", None, "P2D", "2026-12-13T08:00:00Z", id="no-zone-is-utc"),
    ],
)
def test_an_instant_promised_is_due_then_plus_the_grace(due_by, zone, grace, deadline):
    at = with_grace(datetime.fromisoformat(due_by), zone, policy(grace), grace="promise")
    assert at == datetime.fromisoformat(deadline) and at.tzinfo is UTC


def test_a_day_promised_is_due_at_its_end_in_the_customers_zone_plus_the_grace():
    at = end_of_day(date(2026, 12, 10), "Asia/Tokyo", policy("P2D"), grace="promise")
    assert at == datetime(2026, 12, 12, 15, tzinfo=UTC)
