"""Re-planning as a pure function: an invoice's timers and a fresh plan (planning.plan) in, changes out."""

from datetime import UTC, date, datetime, timedelta

import pytest

from dunning_scheduler.planning import plan
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.replanning import frozen_stages, replan

POLICY = parse_policy(
    {
        "stages": [
            {"name": "pre_due", "offset": "-P3D"},
            {"name": "soft", "offset": "P1D"},
            {"name": "firm", "offset": "P7D"},
        ]
    },
    version=1,
)
NOW = datetime(2031, 3, 1, 12, tzinfo=UTC)
DUE = date(2031, 3, 20)


def fresh(due: date = DUE, *, policy=POLICY, timezone: str = "UTC", at: datetime = NOW):
    return plan(policy, due_date=due, timezone_name=timezone, issued_at=NOW, settled=False, now=at, accepted_at=at)


def rows(states: dict[str, str], due: date = DUE) -> list[dict]:
    """Timer rows as planned for `due`, with the given states by stage (default scheduled)."""
    return [
        {
            "stage_id": f"stg_old{t.sequence}",
            "stage": t.stage,
            "sequence": t.sequence,
            "channel": t.channel,
            "template": t.template,
            "scheduled_at": t.scheduled_at,
            "state": states.get(t.stage, "scheduled"),
            "reason": "past_at_planning" if states.get(t.stage) == "skipped" else None,
            "policy_version": 1,
        }
        for t in fresh(due)
    ]


def summary(changes) -> list[tuple]:
    return [(c.stage, c.stage_id.startswith("stg_old"), c.state, c.listed) for c in changes]


@pytest.mark.parametrize(
    "states, new_due, expected",
    [
        pytest.param({}, DUE, [], id="nothing-moves-nothing-changes"),
        pytest.param(
            {},
            DUE + timedelta(days=5),
            [
                ("pre_due", True, "scheduled", True),
                ("soft", True, "scheduled", True),
                ("firm", True, "scheduled", True),
            ],
            id="all-pending-move-keeping-their-ids",
        ),
        pytest.param(
            {"pre_due": "fired"},
            DUE + timedelta(days=5),
            [("soft", True, "scheduled", True), ("firm", True, "scheduled", True)],
            id="a-sent-stage-stays-sent",
        ),
        pytest.param(
            {"pre_due": "skipped", "soft": "fired"},
            DUE + timedelta(days=30),
            [("firm", True, "scheduled", True)],
            id="never-back-to-an-earlier-tone",
        ),
        pytest.param(
            {},
            date(2031, 2, 20),  # all three now past: the latest at the change, the others skipped
            [("pre_due", True, "skipped", True), ("soft", True, "skipped", True), ("firm", True, "scheduled", True)],
            id="new-times-already-past-follow-the-planners-rule",
        ),
    ],
)
def test_a_due_date_move(states, new_due, expected):
    changes = replan(rows(states), fresh(new_due), policy_version=1, reason="due_date_changed")
    assert summary(changes) == expected
    for change in changes:
        if change.state == "scheduled" and new_due < DUE:
            assert change.scheduled_at == NOW  # the latest past stage: at the change


def test_moved_stages_carry_their_old_and_new_times():
    old = rows({})
    [pre_due, soft, firm] = replan(old, fresh(DUE + timedelta(days=1)), policy_version=1, reason="due_date_changed")
    assert (soft.previous_scheduled_at, soft.scheduled_at) == (
        old[1]["scheduled_at"],
        old[1]["scheduled_at"] + timedelta(days=1),
    )


def test_a_new_policy_drops_adds_and_renames_stages():
    policy = parse_policy(
        {
            "stages": [
                {"name": "soft", "offset": "P2D", "template": "gentle"},
                {"name": "final", "offset": "P14D", "channels": ["email", "letter"]},
            ]
        },
        version=2,
    )
    changes = replan(rows({"pre_due": "fired"}), fresh(policy=policy), policy_version=2, reason="policy_applied")
    got = {(c.stage, c.channel): c for c in changes}
    assert set(got) == {("soft", "email"), ("final", "email"), ("final", "letter"), ("firm", "email")}
    assert got[("soft", "email")].stage_id == "stg_old1" and got[("soft", "email")].template == "gentle"
    assert got[("firm", "email")].state == "cancelled" and got[("firm", "email")].scheduled_at is None
    assert got[("firm", "email")].reason == "policy_applied"
    assert all(got[("final", c)].added and got[("final", c)].previous_scheduled_at is None for c in ("email", "letter"))
    assert ("pre_due", "email") not in got  # fired: stays


def test_a_stage_dropped_earlier_comes_back_with_its_id():
    old = rows({})
    old[2] = {**old[2], "state": "cancelled", "reason": "policy_applied"}
    [firm] = replan(old, fresh(), policy_version=1, reason="policy_applied")
    assert (firm.stage_id, firm.state, firm.previous_scheduled_at, firm.added) == ("stg_old2", "scheduled", None, False)


def test_only_a_new_policy_version_is_written_silently():
    [pre_due, soft, firm] = replan(rows({}), fresh(), policy_version=2, reason="policy_applied")
    assert not any(c.listed for c in (pre_due, soft, firm))


def test_frozen_stages_are_those_up_to_the_last_one_sent():
    assert frozen_stages(rows({"soft": "fired"}), fresh()) == {"pre_due", "soft"}
    assert frozen_stages(rows({}), fresh()) == set()


def test_a_time_zone_change_moves_the_wall_clock_times():
    changes = replan(rows({}), fresh(timezone="Asia/Tokyo"), policy_version=1, reason="timezone_changed")
    assert [c.scheduled_at - c.previous_scheduled_at for c in changes] == [timedelta(hours=-9)] * 3


@pytest.mark.parametrize(
    "new_due",
    [
        pytest.param(DUE, id="the-change-moves-nothing"),
        pytest.param(DUE + timedelta(days=10), id="the-due-date-moves-later"),
        pytest.param(DUE - timedelta(days=10), id="the-due-date-moves-earlier"),
    ],
)
def test_a_stage_owed_before_the_change_and_not_yet_fired_is_neither_skipped_nor_moved(new_due):
    """Firing lagged (or waited for the gate): pre_due and soft fell due before the change and have not
    fired. A change accepted after them leaves both as they are; only stages not yet due follow it."""
    timers = rows({})
    changed_at = timers[1]["scheduled_at"] + timedelta(hours=1)  # after pre_due and soft, before firm
    changes = replan(
        timers,
        fresh(new_due, at=changed_at),
        policy_version=1,
        reason="due_date_changed",
        changed_at=changed_at,
    )
    assert {c.stage for c in changes} <= {"firm"}
    assert all(c.state == "scheduled" for c in changes)
