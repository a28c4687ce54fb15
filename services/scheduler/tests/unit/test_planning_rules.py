"""Planning with a working calendar, a send window, grace and the minimum-balance threshold."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_scheduler.calendars import EVERY_DAY, WorkingCalendar
from dunning_scheduler.planning import PlannedTimer, placed_instants, plan, zone_for
from dunning_scheduler.policy import DEFAULT_POLICY, Policy, parse_policy
from dunning_scheduler.windows import SendWindow

pytestmark = pytest.mark.unit
BERLIN = ZoneInfo("Europe/Berlin")
ISSUED = datetime(2025, 11, 1, 8, tzinfo=UTC)
WEEKDAYS = frozenset(range(5))
GERMANY = WorkingCalendar(WEEKDAYS, "DE", None, frozenset())
BAVARIA = WorkingCalendar(WEEKDAYS, "DE", "BY", frozenset())
BERLIN_STATE = WorkingCalendar(WEEKDAYS, "DE", "BE", frozenset())
OFFICE = SendWindow(WEEKDAYS, time(8), time(17), 3600)


def policy(*offsets: str, **keys) -> Policy:
    stages = [{"name": f"s{n}", "offset": offset} for n, offset in enumerate(offsets)]
    return parse_policy({"stages": stages, **keys})


def planned(p: Policy, due: date, **kwargs) -> list[PlannedTimer]:
    return plan(
        p,
        due_date=due,
        timezone_name="Europe/Berlin",
        issued_at=ISSUED,
        settled=False,
        now=kwargs.pop("now", ISSUED),
        **kwargs,
    )


def local(timer: PlannedTimer) -> datetime:
    return timer.scheduled_at.astimezone(BERLIN)


def test_a_stage_on_christmas_moves_to_the_next_working_day_and_says_why():
    (timer,) = planned(policy("P1D"), date(2026, 12, 24), calendar=GERMANY)
    assert local(timer) == datetime(2026, 12, 28, 9, tzinfo=BERLIN)
    assert timer.moved == "2026-12-25 is Christmas Day (DE): moved to 2026-12-28"


def test_epiphany_moves_a_bavarian_customers_stage_but_not_a_berliners():
    bavarian = planned(policy("P1D"), date(2026, 1, 5), calendar=BAVARIA)[0]
    berliner = planned(policy("P1D"), date(2026, 1, 5), calendar=BERLIN_STATE)[0]
    assert local(bavarian).date() == date(2026, 1, 7)
    assert bavarian.moved == "2026-01-06 is Epiphany (DE-BY): moved to 2026-01-07"
    assert local(berliner).date() == date(2026, 1, 6) and berliner.moved is None


def test_previous_moves_back_and_keep_stays():
    back = planned(policy("P1D", non_working_day="previous"), date(2026, 12, 25), calendar=GERMANY)[0]
    assert local(back).date() == date(2026, 12, 24)
    assert back.moved == "2026-12-26 is a Saturday: moved to 2026-12-24"
    kept = planned(policy("P1D", non_working_day="keep"), date(2026, 12, 25), calendar=GERMANY)[0]
    assert local(kept).date() == date(2026, 12, 26) and kept.moved is None


def test_a_stage_never_goes_before_the_previous_one_after_a_backward_roll():
    # P1D lands on Fri 25 Dec (rolls back to the 24th); P2D on Sat 26th also rolls back to the 24th.
    timers = planned(policy("P1D", "P2D", non_working_day="previous"), date(2026, 12, 24), calendar=GERMANY)
    assert [local(t).date() for t in timers] == [date(2026, 12, 24), date(2026, 12, 24)]


def test_business_days_count_past_weekends_and_holidays():
    p = policy("-P2D", "P1D", "P3D", days="business")
    timers = planned(p, date(2026, 12, 23), calendar=GERMANY)
    assert [local(t).date() for t in timers] == [date(2026, 12, 21), date(2026, 12, 24), date(2026, 12, 29)]
    assert all(t.moved is None for t in timers)
    monday = planned(policy("-P1D", days="business"), date(2026, 11, 30), calendar=GERMANY)[0]
    assert local(monday).date() == date(2026, 11, 27)


def test_a_closure_day_moves_a_stage():
    closing = WorkingCalendar(frozenset(range(7)), None, None, frozenset({date(2026, 12, 31)}))
    (timer,) = planned(policy("P1D"), date(2026, 12, 30), calendar=closing)
    assert local(timer).date() == date(2027, 1, 1)
    assert timer.moved == "2026-12-31 is a closure day: moved to 2027-01-01"


def test_grace_counts_overdue_stages_from_the_due_date_plus_grace():
    p = policy("-P3D", "P1D", grace="P5D")
    timers = planned(p, date(2026, 12, 1))
    assert [local(t).date() for t in timers] == [date(2026, 11, 28), date(2026, 12, 7)]
    business = policy("P1D", grace="P2D", days="business")
    assert local(planned(business, date(2026, 12, 23), calendar=GERMANY)[0]).date() == date(2026, 12, 29)


def test_the_send_window_moves_an_early_stage_into_the_opening_stably_per_customer():
    p = policy("P1D", "P2D", send_time="07:00")
    one = planned(p, date(2026, 12, 3), window=OFFICE, calendar=GERMANY, customer_key="cus_1")
    again = planned(p, date(2026, 12, 3), window=OFFICE, calendar=GERMANY, customer_key="cus_1")
    assert [t.scheduled_at for t in one] == [t.scheduled_at for t in again]
    friday_8 = datetime(2026, 12, 4, 8, tzinfo=BERLIN)
    assert friday_8 <= local(one[0]) < friday_8 + timedelta(hours=1)
    assert one[0].moved == "Friday 07:00 is outside the send window Mon–Fri 08:00–17:00 (Europe/Berlin)"
    monday_8 = datetime(2026, 12, 7, 8, tzinfo=BERLIN)  # P2D is Saturday the 5th: rolled to Monday, then 08:00
    assert monday_8 <= local(one[1]) < monday_8 + timedelta(hours=1)
    assert one[1].moved == (
        "2026-12-05 is a Saturday: moved to 2026-12-07; "
        "Monday 07:00 is outside the send window Mon–Fri 08:00–17:00 (Europe/Berlin)"
    )
    spread = {planned(p, date(2026, 12, 3), window=OFFICE, customer_key=f"cus_{n}")[0].scheduled_at for n in range(9)}
    assert len(spread) > 5


def test_an_evening_stage_moves_to_the_next_mornings_opening():
    p = policy("P1D", send_time="19:30")
    (timer,) = planned(p, date(2026, 12, 1), window=SendWindow(WEEKDAYS, time(8), time(17), 0))
    assert local(timer) == datetime(2026, 12, 3, 8, tzinfo=BERLIN)


def test_below_the_minimum_balance_stages_are_skipped():
    p = policy("-P3D", "P1D", "P7D", minimum_balance={"EUR": "10.00"})
    small = planned(p, date(2026, 12, 1), balance=Decimal("9.99"), currency="EUR")
    assert [(t.state, t.reason) for t in small] == [("skipped", "below_minimum_balance")] * 3
    enough = planned(p, date(2026, 12, 1), balance=Decimal("10.00"), currency="EUR")
    assert {t.state for t in enough} == {"scheduled"}
    other = planned(p, date(2026, 12, 1), balance=Decimal("1.00"), currency="GBP")
    assert {t.state for t in other} == {"scheduled"}  # no minimum for GBP


def test_pre_due_only_keeps_the_courtesy_note_below_the_minimum():
    p = policy("-P3D", "P0D", "P1D", minimum_balance={"EUR": "10.00"}, below_minimum="pre_due_only")
    timers = planned(p, date(2026, 12, 1), balance=Decimal("5"), currency="EUR")
    assert [t.state for t in timers] == ["scheduled", "scheduled", "skipped"]
    assert p.chased(p.stages[0], Decimal("5"), "EUR") and not p.chased(p.stages[2], Decimal("5"), "EUR")


def test_a_skipped_stage_below_the_minimum_is_not_the_one_sent_late():
    # Imported late: only s0 (pre-due, chased) may be the stage sent now; s1 is below the minimum.
    p = policy("-P3D", "P1D", "P30D", minimum_balance={"EUR": "10.00"}, below_minimum="pre_due_only")
    now = datetime(2026, 12, 10, tzinfo=UTC)
    timers = planned(p, date(2026, 12, 1), balance=Decimal("5"), currency="EUR", now=now)
    assert [(t.state, t.reason) for t in timers] == [
        ("scheduled", None),
        ("skipped", "below_minimum_balance"),
        ("skipped", "below_minimum_balance"),
    ]
    assert timers[0].scheduled_at == now


# --- parity: the plain path (today's) and the general path agree where no rule applies ----------------


def old_plan_instants(p: Policy, due: date, zone: ZoneInfo) -> list[datetime]:
    """The planning algorithm as it stood before calendars and windows, kept here as the reference."""
    anchor = datetime.combine(due, p.send_time, tzinfo=zone)
    instants: list[datetime] = []
    for stage in p.stages:
        at = stage.offset.add_to(anchor)
        if instants and at < instants[-1]:
            at = instants[-1]
        instants.append(at.astimezone(UTC))
    return instants


OFFSETS = ["-P3D", "-PT1H", "P0D", "P1D", "P7D", "P1M", "P29D", "P1MT5H", "P14D", "P30D", "P2M", "P1Y"]


@settings(max_examples=150, deadline=None)
@given(
    due=st.dates(date(2025, 1, 1), date(2028, 12, 31)),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC", "Asia/Kolkata"]),
    offsets=st.sets(st.sampled_from(OFFSETS), min_size=1, max_size=6),
    send_time=st.sampled_from(["00:00", "02:30", "09:00", "23:59"]),
    now_days=st.integers(-10, 60),
)
def test_without_rules_the_plan_is_exactly_todays(due, zone, offsets, send_time, now_days):
    ordered = sorted(
        offsets, key=lambda o: parse_policy({"stages": [{"name": "a", "offset": o}]}).stages[0].offset.nominal_seconds()
    )
    p = policy(*ordered, send_time=send_time)
    reference = old_plan_instants(p, due, zone_for(zone))
    now = datetime.combine(due, time(12), tzinfo=UTC) + timedelta(days=now_days)
    plain = plan(p, due_date=due, timezone_name=zone, issued_at=ISSUED, settled=False, now=now, stage_ids=["x"] * 6)
    every = plan(
        p,
        due_date=due,
        timezone_name=zone,
        issued_at=ISSUED,
        settled=False,
        now=now,
        stage_ids=["x"] * 6,
        calendar=EVERY_DAY,
        balance=Decimal("1"),
        currency="EUR",
    )
    assert plain == every
    general = [
        placed.at
        for placed in placed_instants(
            p, due_date=due, zone=zone_for(zone), issued_at=ISSUED, calendar=EVERY_DAY, window=None
        )
    ]
    clamped: list[datetime] = []
    for at in general:
        clamped.append(at if not clamped or at >= clamped[-1] else clamped[-1])
    assert clamped == reference
    assert [t.scheduled_at for t in plain if t.state == "scheduled" and t.scheduled_at > now] == [
        at for at in reference if at > now
    ]
    assert all(t.moved is None for t in plain)


def test_the_default_policy_plans_as_before_with_an_all_days_calendar():
    due = date(2026, 10, 20)
    before = plan(
        DEFAULT_POLICY,
        due_date=due,
        timezone_name="Europe/Berlin",
        issued_at=ISSUED,
        settled=False,
        now=ISSUED,
        stage_ids=[f"s{i}" for i in range(5)],
    )
    assert [t.scheduled_at for t in before] == old_plan_instants(DEFAULT_POLICY, due, BERLIN)


def test_issued_at_anchors_roll_and_meet_the_window_too():
    saturday = datetime(2026, 12, 5, 10, tzinfo=BERLIN).astimezone(UTC)
    p = policy("PT5S", "P2D", anchor="issued_at", days="business")
    timers = plan(
        p,
        due_date=date(2026, 12, 20),
        timezone_name="Europe/Berlin",
        issued_at=saturday,
        settled=False,
        now=saturday,
        calendar=GERMANY,
        window=SendWindow(WEEKDAYS, time(8), time(17), 0),
    )
    # PT5S: Saturday 10:00:05 rolls to Monday 10:00:05, inside the window; P2D: two working days after
    # Saturday is Tuesday, at the issued local time.
    assert [local(t) for t in timers] == [
        datetime(2026, 12, 7, 10, 0, 5, tzinfo=BERLIN),
        datetime(2026, 12, 8, 10, 0, tzinfo=BERLIN),
    ]
    assert timers[0].moved == "2026-12-05 is a Saturday: moved to 2026-12-07"
