"""WatermarkWanted: the scheduler says from when on it needs statements (the earliest timer or gated
deadline above the gate's watermark), on the real PostgreSQL and broker."""

from datetime import timedelta

import pytest

from dunning.clock import utcnow
from dunning.events import validate
from dunning_scheduler import repository
from dunning_scheduler.wants import WantsLoop

pytestmark = pytest.mark.integration


async def test_statements_are_wanted_from_the_earliest_timer_the_gate_does_not_cover(pool, firing_h):
    async with pool.acquire() as conn:
        assert await repository.wanted_from(conn) is None  # nothing pending: nothing wanted
    issued = await firing_h.issue(pool)
    times = sorted(
        t["scheduled_at"] for t in await firing_h.timers(pool, issued["subject"]) if t["state"] == "scheduled"
    )
    assert len(times) >= 2
    async with pool.acquire() as conn:
        assert await repository.wanted_from(conn) == times[0]  # no statement yet: every timer is uncovered
        for source in repository.GATE_SOURCES:
            await firing_h.state(pool, source, times[0])  # the gate covers the first timer (as it fires)
        assert await repository.wanted_from(conn) == times[1]
        await firing_h.state(pool, "reconciliation", times[-1])  # one source ahead: the other still holds it
        assert await repository.wanted_from(conn) == times[1]
        await firing_h.state(pool, "invoice-ingest", times[-1])
        assert await repository.wanted_from(conn) is None


async def test_a_held_back_timer_under_the_watermark_wants_nothing_newer(pool, firing_h):
    issued = await firing_h.issue(pool)
    await pool.execute(
        "UPDATE timers SET scheduled_at = now() - interval '1 minute' WHERE invoice_id = $1", issued["subject"]
    )
    async with pool.acquire() as conn:
        assert await repository.wanted_from(conn) is not None
        for source in repository.GATE_SOURCES:
            await firing_h.state(pool, source, utcnow())
        # due, covered, not fired (a held customer's timer would stay so): no statement makes it fire sooner
        assert await repository.wanted_from(conn) is None


async def test_a_timer_under_the_watermark_not_yet_certified_wants_a_newer_statement(pool, firing_h):
    """Its InvoiceIssued (offset 41) was not consumed by reconciliation when it stated: only a newer
    statement of reconciliation's can let it fire, so one is wanted from its time on."""
    issued = await firing_h.issue(pool)
    await pool.execute(
        "UPDATE timers SET scheduled_at = now() - interval '1 minute', gate_partition = 0, gate_offset = 41"
        " WHERE invoice_id = $1",
        issued["subject"],
    )
    due = min(t["scheduled_at"] for t in await firing_h.timers(pool, issued["subject"]))
    async with pool.acquire() as conn:
        await firing_h.state(pool, "invoice-ingest", utcnow())
        await firing_h.state(pool, "reconciliation", utcnow(), '{"0": 41}')  # positions below its offset
        assert await repository.wanted_from(conn) == due
        await firing_h.state(pool, "reconciliation", utcnow(), '{"0": 42}')  # a newer statement certifies it
        assert await repository.wanted_from(conn) is None


async def test_the_loop_publishes_the_time_on_change_as_a_valid_event(pool, firing_h, infra, producer):
    issued = await firing_h.issue(pool)
    first = min(t["scheduled_at"] for t in await firing_h.timers(pool, issued["subject"]))
    loop = WantsLoop(pool, producer, heartbeat_seconds=3600)
    await loop.step()
    await loop.step()  # unchanged within the heartbeat: not published again
    assert loop.published == 1 and loop.last == first
    await pool.execute("UPDATE timers SET scheduled_at = $2 WHERE invoice_id = $1", issued["subject"],
                       first - timedelta(hours=1))  # fmt: skip
    await loop.step()
    assert loop.published == 2
    words = await firing_h.read_topic(
        infra.kafka_bootstrap_servers,
        "dunning.watermarks.v1",
        lambda es: any(
            e["type"] == "dunning.WatermarkWanted.v1"
            and e["data"]["wanted_from"] == (first - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
            for e in es
        ),
    )
    for e in words:
        if e["type"] == "dunning.WatermarkWanted.v1":
            validate(e)
