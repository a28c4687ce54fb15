"""The scheduler's loops at rest: a look that finds nothing due reads no gate and opens no firing
transaction (firing.FiringLoop.step, deadline_loop.DeadlineLoop, repository.wanted_from), and finds
what is due the moment it is; on the real PostgreSQL."""

import pytest

from dunning_scheduler import repository
from dunning_scheduler.deadline_loop import DeadlineLoop
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy_store import ActivePolicies

pytestmark = pytest.mark.integration


def _count_calls(monkeypatch, owner, name: str) -> list:
    calls, real = [], getattr(owner, name)

    async def counted(*args, **kwargs):
        calls.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


async def test_a_firing_look_with_nothing_due_opens_no_firing_transaction_and_fires_what_falls_due(
    pool, schema, firing_h, monkeypatch
):
    loop = FiringLoop(pool, schema, gated=False, poll_seconds=1.0)
    fires = _count_calls(monkeypatch, loop, "fire_once")
    assert await loop.step() == 1.0 and fires == []  # no timer at all

    issued = await firing_h.issue(pool)  # its stages are planned ahead: none due yet
    assert 0 < await loop.step() <= 1.0 and fires == []

    await firing_h.make_due(pool, issued["subject"])
    await loop.step()
    assert len(fires) == 1 and loop.fired_total >= 1
    fired = await pool.fetchval(
        "SELECT count(*) FROM timers WHERE invoice_id = $1 AND state = 'fired'", issued["subject"]
    )
    assert fired == loop.fired_total


async def test_a_deadline_look_with_nothing_due_reads_no_gate(pool, monkeypatch):
    gates = _count_calls(monkeypatch, repository, "gate_state")
    loop = DeadlineLoop(pool, ActivePolicies(), gated=True)
    assert await loop.judge_once() == 0 and gates == []  # no deadline at all
    await pool.execute(
        "INSERT INTO deadlines (kind, cause_id, number, tenant_id, at, gated)"
        " VALUES ('promise', 'pp_test', 1, 'ten_x', now() + interval '1 hour', true)"
    )
    assert await loop.judge_once() == 0 and gates == []  # one, not due yet
    await pool.execute("UPDATE deadlines SET at = now() - interval '1 second' WHERE cause_id = 'pp_test'")
    assert await loop.judge_once() == 0 and len(gates) == 1  # due: the gate is read (no statement: it waits)


async def test_wanted_from_is_none_with_nothing_scheduled_and_the_first_timer_once_one_is(pool, firing_h):
    async with pool.acquire() as conn:
        assert await repository.wanted_from(conn) is None
        issued = await firing_h.issue(pool)
        first = await conn.fetchval(
            "SELECT min(scheduled_at) FROM timers WHERE invoice_id = $1 AND state = 'scheduled'", issued["subject"]
        )
        assert await repository.wanted_from(conn) == first  # no statement yet: every timer is wanted
