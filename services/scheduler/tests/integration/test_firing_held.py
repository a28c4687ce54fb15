"""The firing loop says why due stages wait when the gate holds them back (scheduler.firing.held):
how many, the oldest, the gate's watermark and each source's best usable statement; on the real
PostgreSQL."""

from datetime import timedelta

import pytest
import structlog

from dunning.clock import utcnow
from dunning_scheduler import repository
from dunning_scheduler.firing import HELD_REPORT_SECONDS, FiringLoop

pytestmark = pytest.mark.integration


async def _reports(loop: FiringLoop) -> list[dict]:
    captured, old = structlog.testing.LogCapture(), structlog.get_config()
    structlog.configure(processors=[captured])
    try:
        await loop._sleep_seconds(await loop._next_due())
    finally:
        structlog.configure(**old)
    return [e for e in captured.entries if e["event"] == "scheduler.firing.held"]


async def test_stages_the_gate_holds_back_are_reported_with_the_gate_then_not_once_it_passes_them(
    pool, schema, firing_h
):
    issued = await firing_h.issue(pool)
    overdue = HELD_REPORT_SECONDS + 5
    await pool.execute(  # due a while ago; its InvoiceIssued at offset 41 of partition 0
        "UPDATE timers SET scheduled_at = now() - make_interval(secs => $2), gate_partition = 0, gate_offset = 41"
        " WHERE invoice_id = $1 AND state = 'scheduled'",
        issued["subject"],
        overdue,
    )
    scheduled = await pool.fetchval(
        "SELECT count(*) FROM timers WHERE invoice_id = $1 AND state = 'scheduled'", issued["subject"]
    )
    loop = FiringLoop(pool, schema)

    [held] = await _reports(loop)  # no statement at all: nothing passes the gate
    assert held["held"] == scheduled and held["held_seconds"] >= overdue, held
    assert held["watermark"] is None and held["sources"] == {}
    assert await _reports(loop) == []  # not again within HELD_REPORT_SECONDS

    loop._last_held_report = float("-inf")
    await firing_h.state(pool, "reconciliation", utcnow())
    [held] = await _reports(loop)  # one source has stated: the gate still waits for the other
    assert set(held["sources"]) == {"reconciliation"} and held["watermark"] is None

    loop._last_held_report = float("-inf")
    await firing_h.state(pool, "invoice-ingest", utcnow())
    [held] = await _reports(loop)  # under the watermark, but its InvoiceIssued is not certified yet
    assert held["watermark"] is not None and held["held"] == scheduled

    loop._last_held_report = float("-inf")
    await firing_h.state(pool, "reconciliation", utcnow() + timedelta(seconds=1), '{"0": 42}')  # certified
    async with pool.acquire() as conn:
        assert await repository.held_by_gate(conn) is None
    assert await _reports(loop) == []  # the gate passes them: whatever still waits, it is not the gate
