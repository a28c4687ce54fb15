from datetime import UTC, date, datetime, timedelta

import pytest

from dunning_scheduler.planning import plan
from dunning_scheduler.policy import DEFAULT_POLICY, parse_policy

pytestmark = pytest.mark.unit
UTC = UTC
ISSUED = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def test_default_policy_sends_at_nine_in_the_customers_zone_across_dst():
    # Due 20 Oct 2026 (CEST, UTC+2); summer time ends 25 Oct, later stages are CET (UTC+1).
    timers = plan(
        DEFAULT_POLICY,
        due_date=date(2026, 10, 20),
        timezone_name="Europe/Berlin",
        issued_at=ISSUED,
        settled=False,
        now=ISSUED,
    )
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


def test_new_york_customer_gets_nine_new_york_time():
    timers = plan(
        DEFAULT_POLICY,
        due_date=date(2026, 7, 15),
        timezone_name="America/New_York",
        issued_at=ISSUED,
        settled=False,
        now=ISSUED,
    )
    assert timers[1].scheduled_at == datetime(2026, 7, 16, 13, tzinfo=UTC)


def test_an_old_invoice_imported_late_gets_one_reminder_now_not_four():
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)  # due 20 Oct: pre_due, soft, firm, final are past
    timers = plan(
        DEFAULT_POLICY,
        due_date=date(2026, 10, 20),
        timezone_name="Europe/Berlin",
        issued_at=ISSUED,
        settled=False,
        now=now,
    )
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
    timers = plan(policy, due_date=date(2026, 10, 20), timezone_name="UTC", issued_at=ISSUED, settled=False, now=now)
    assert [(t.stage, t.channel, t.state, t.scheduled_at) for t in timers] == [
        ("soft", "email", "skipped", ISSUED),
        ("firm", "email", "scheduled", now),
        ("firm", "sms", "scheduled", now),
        ("final", "email", "scheduled", ISSUED + timedelta(hours=1)),
    ]
    assert timers[1].sequence == timers[2].sequence == 1


def test_stages_due_while_the_scheduler_lagged_are_not_skipped_they_fire_late():
    policy = parse_policy(
        {
            "anchor": "issued_at",
            "stages": [
                {"name": "soft", "offset": "PT0S"},
                {"name": "firm", "offset": "PT8S"},
                {"name": "final", "offset": "PT16S"},
                {"name": "collections", "offset": "PT1H"},
            ],
        }
    )
    accepted = ISSUED + timedelta(seconds=1)  # ingest took it; the scheduler plans it 20 s later
    now = ISSUED + timedelta(seconds=21)
    timers = plan(
        policy,
        due_date=date(2026, 10, 20),
        timezone_name="UTC",
        issued_at=ISSUED,
        settled=False,
        now=now,
        accepted_at=accepted,
    )
    assert [(t.stage, t.state, t.scheduled_at) for t in timers] == [
        ("soft", "scheduled", accepted),  # the one past at ingest: at that moment, not skipped
        ("firm", "scheduled", ISSUED + timedelta(seconds=8)),  # fell due during the lag: fires now
        ("final", "scheduled", ISSUED + timedelta(seconds=16)),
        ("collections", "scheduled", ISSUED + timedelta(hours=1)),
    ]
    # Without accepted_at (or with a clock ahead of ours), planning time is the cut-off.
    lagless = plan(
        policy,
        due_date=date(2026, 10, 20),
        timezone_name="UTC",
        issued_at=ISSUED,
        settled=False,
        now=now,
        accepted_at=now + timedelta(hours=1),
    )
    assert [t.state for t in lagless] == ["skipped", "skipped", "scheduled", "scheduled"]


def test_an_invoice_already_settled_is_planned_all_cancelled():
    timers = plan(
        DEFAULT_POLICY,
        due_date=date(2026, 10, 20),
        timezone_name="Europe/Berlin",
        issued_at=ISSUED,
        settled=True,
        now=ISSUED,
    )
    assert {(t.state, t.reason) for t in timers} == {("cancelled", "invoice_settled")}
    assert len(timers) == 5


def test_an_unknown_zone_falls_back_to_utc():
    timers = plan(
        DEFAULT_POLICY,
        due_date=date(2026, 10, 20),
        timezone_name="Mars/Olympus_Mons",
        issued_at=ISSUED,
        settled=False,
        now=ISSUED,
    )
    assert timers[1].scheduled_at == datetime(2026, 10, 21, 9, tzinfo=UTC)


def test_calendar_edge_never_moves_a_stage_before_the_previous_one():
    policy = parse_policy(
        {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "P29D"}, {"name": "firm", "offset": "P1M"}]}
    )
    issued = datetime(2027, 1, 31, 9, tzinfo=UTC)  # +P29D = 1 Mar, +P1M = 28 Feb
    timers = plan(policy, due_date=date(2027, 2, 1), timezone_name="UTC", issued_at=issued, settled=False, now=issued)
    assert timers[0].scheduled_at == timers[1].scheduled_at == datetime(2027, 3, 1, 9, tzinfo=UTC)
