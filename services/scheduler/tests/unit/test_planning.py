from datetime import UTC, date, datetime, timedelta

import pytest

from dunning_scheduler.planning import PlannedTimer, plan
from dunning_scheduler.policy import DEFAULT_POLICY, Policy, parse_policy

pytestmark = pytest.mark.unit
ISSUED = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def planned(
    policy: Policy = DEFAULT_POLICY,
    *,
    due_date: date = date(2026, 10, 20),
    timezone_name: str = "Europe/Berlin",
    issued_at: datetime = ISSUED,
    settled: bool = False,
    now: datetime | None = None,
    accepted_at: datetime | None = None,
) -> list[PlannedTimer]:
    """The plan of an open invoice issued at ISSUED, due 20 Oct 2026, for a customer in Berlin,
    planned at its issue, unless told otherwise."""
    return plan(
        policy,
        due_date=due_date,
        timezone_name=timezone_name,
        issued_at=issued_at,
        settled=settled,
        now=issued_at if now is None else now,
        accepted_at=accepted_at,
    )


def stages(*spec: tuple[str, str], anchor: str = "issued_at") -> Policy:
    """A policy of stages (name, ISO 8601 offset) on the email channel."""
    return parse_policy({"anchor": anchor, "stages": [{"name": name, "offset": offset} for name, offset in spec]})


def test_default_policy_sends_at_nine_in_the_customers_zone_across_dst():
    # Due 20 Oct 2026 (CEST, UTC+2); summer time ends 25 Oct, later stages are CET (UTC+1).
    timers = planned()
    assert [(t.stage, t.sequence, t.channel, t.template, t.scheduled_at) for t in timers] == [
        ("pre_due", 0, "email", "pre_due", datetime(2026, 10, 17, 7, tzinfo=UTC)),
        ("soft", 1, "email", "soft", datetime(2026, 10, 21, 7, tzinfo=UTC)),
        ("firm", 2, "email", "firm", datetime(2026, 10, 27, 8, tzinfo=UTC)),
        ("final", 3, "email", "final", datetime(2026, 11, 3, 8, tzinfo=UTC)),
        ("collections", 4, "email", "collections", datetime(2026, 11, 19, 8, tzinfo=UTC)),
    ]
    assert {t.state for t in timers} == {"scheduled"}
    assert len({t.stage_id for t in timers}) == 5
    assert all(t.stage_id.startswith("stg_") for t in timers)


@pytest.mark.parametrize(
    ("due_date", "timezone_name", "soft_at"),
    [
        pytest.param(
            date(2026, 7, 15),
            "America/New_York",
            datetime(2026, 7, 16, 13, tzinfo=UTC),
            id="new_york_customer_gets_nine_new_york_time",
        ),
        pytest.param(
            date(2026, 10, 20),
            "Mars/Olympus_Mons",
            datetime(2026, 10, 21, 9, tzinfo=UTC),
            id="an_unknown_zone_falls_back_to_utc",
        ),
    ],
)
def test_the_soft_reminder_goes_out_at_nine_in_the_customers_zone(due_date, timezone_name, soft_at):
    assert planned(due_date=due_date, timezone_name=timezone_name)[1].scheduled_at == soft_at


def test_an_old_invoice_imported_late_gets_one_reminder_now_not_four():
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)  # due 20 Oct: pre_due, soft, firm, final are past
    timers = planned(now=now)
    assert [(t.stage, t.state, t.reason) for t in timers] == [
        ("pre_due", "skipped", "past_at_planning"),
        ("soft", "skipped", "past_at_planning"),
        ("firm", "skipped", "past_at_planning"),
        ("final", "scheduled", None),
        ("collections", "scheduled", None),
    ]
    assert timers[3].scheduled_at == now
    assert timers[4].scheduled_at == datetime(2026, 11, 19, 8, tzinfo=UTC)


def test_every_channel_of_the_latest_past_stage_fires_now():
    policy = parse_policy(
        {
            "anchor": "issued_at",
            "stages": [
                {"name": "soft", "offset": "PT0S"},
                {"name": "firm", "offset": "PT1S", "channels": ["email", "sms"]},
                {"name": "final", "offset": "PT1H"},
            ],
        }
    )
    now = ISSUED + timedelta(seconds=30)
    timers = planned(policy, timezone_name="UTC", now=now)
    assert [(t.stage, t.channel, t.state, t.scheduled_at) for t in timers] == [
        ("soft", "email", "skipped", ISSUED),
        ("firm", "email", "scheduled", now),
        ("firm", "sms", "scheduled", now),
        ("final", "email", "scheduled", ISSUED + timedelta(hours=1)),
    ]
    assert timers[1].sequence == timers[2].sequence == 1


def test_stages_due_while_the_scheduler_lagged_are_not_skipped_they_fire_late():
    policy = stages(("soft", "PT0S"), ("firm", "PT8S"), ("final", "PT16S"), ("collections", "PT1H"))
    accepted = ISSUED + timedelta(seconds=1)  # ingest took it; the scheduler plans it 20 s later
    now = ISSUED + timedelta(seconds=21)
    timers = planned(policy, timezone_name="UTC", now=now, accepted_at=accepted)
    assert [(t.stage, t.state, t.scheduled_at) for t in timers] == [
        ("soft", "scheduled", accepted),  # the one past at ingest: at that moment, not skipped
        ("firm", "scheduled", ISSUED + timedelta(seconds=8)),  # fell due during the lag: fires now
        ("final", "scheduled", ISSUED + timedelta(seconds=16)),
        ("collections", "scheduled", ISSUED + timedelta(hours=1)),
    ]
    # Without accepted_at (or with a clock ahead of ours), planning time is the cut-off.
    lagless = planned(policy, timezone_name="UTC", now=now, accepted_at=now + timedelta(hours=1))
    assert [t.state for t in lagless] == ["skipped", "skipped", "scheduled", "scheduled"]


def test_an_invoice_already_settled_is_planned_all_cancelled():
    timers = planned(settled=True)
    assert {(t.state, t.reason) for t in timers} == {("cancelled", "invoice_settled")}
    assert len(timers) == 5


def test_calendar_edge_never_moves_a_stage_before_the_previous_one():
    policy = stages(("soft", "P29D"), ("firm", "P1M"))
    issued = datetime(2027, 1, 31, 9, tzinfo=UTC)  # +P29D = 1 Mar, +P1M = 28 Feb
    timers = planned(policy, due_date=date(2027, 2, 1), timezone_name="UTC", issued_at=issued)
    assert timers[0].scheduled_at == timers[1].scheduled_at == datetime(2027, 3, 1, 9, tzinfo=UTC)
