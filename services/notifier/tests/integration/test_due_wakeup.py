"""The dispatcher and the notice workers sleep while nothing is due (due_wakeup.py): a delivery or
notice written wakes them at its commit, and a row due later is slept until, not past. Each test
gives them a minute of idle sleep: without the wake-up or the next-due time nothing would go within
the test's wait."""

import asyncio

import pytest

from dunning_tools.stack.procs import free_port
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration

IDLE = 60.0  # far beyond every wait below


async def _state(notifier, invoice_id: str, state: str):
    row = await notifier.delivery(invoice_id)
    return row if row is not None and row["state"] == state else None


async def test_a_delivery_written_while_the_dispatcher_sleeps_is_sent_at_once(notifier, stage_data):
    async with notifier.dispatching(idle_poll_seconds=IDLE) as dispatcher:
        await asyncio.sleep(0.5)  # it found nothing and sleeps
        woken = dispatcher.wakeup.wakeups
        data = stage_data()
        await notifier.receive(data)
        await async_wait_until(lambda: _state(notifier, data["invoice_id"], "sent"), timeout=15, what="sent")
    assert dispatcher.wakeup.wakeups > woken


async def test_a_delivery_due_later_is_sent_when_it_falls_due(notifier, stage_data):
    data = stage_data()
    await notifier.receive(data)
    await notifier.pool.execute(  # a retry's time, say (no write to wake anyone when it comes)
        "UPDATE deliveries SET next_attempt_at = now() + interval '2 seconds' WHERE invoice_id = $1",
        data["invoice_id"],
    )
    async with notifier.dispatching(idle_poll_seconds=IDLE):
        await asyncio.sleep(0.5)
        assert await _state(notifier, data["invoice_id"], "pending")  # not yet due
        await async_wait_until(lambda: _state(notifier, data["invoice_id"], "sent"), timeout=15, what="sent")


async def test_a_retry_the_dispatcher_recorded_is_attempted_when_due_not_after_its_idle_sleep(notifier, stage_data):
    """A retry is an UPDATE back to pending, which the insert-only trigger does not announce: the
    dispatcher that recorded it looks again itself (DueWakeup.poke), so every attempt comes on time."""
    data = stage_data()
    await notifier.receive(data)
    async with notifier.dispatching(free_port(), idle_poll_seconds=IDLE, max_attempts=3):  # nobody listens
        row = await async_wait_until(lambda: _state(notifier, data["invoice_id"], "failed"), timeout=15, what="failed")
    assert row["attempts"] == 3


async def test_a_notice_written_while_the_workers_sleep_is_sent_at_once(notifier, notice_item, notice_data):
    async with notifier.dispatching(idle_poll_seconds=IDLE):
        await asyncio.sleep(0.5)
        data = notice_data([notice_item(stage="soft"), notice_item(stage=None)])
        await notifier.compose(data)

        async def sent():
            row = await notifier.notice(data["notice_id"])
            return row if row is not None and row["state"] == "sent" else None

        await async_wait_until(sent, timeout=15, what="notice sent")


async def test_the_dispatcher_listens_again_after_its_connection_is_lost(notifier, stage_data):
    """PostgreSQL drops the LISTEN connection (a restart): the dispatcher listens on a new one, and a
    delivery written after that still goes at once, not after the minute of idle sleep."""
    sql = "SELECT array_agg(pid) FROM pg_stat_activity WHERE query = 'LISTEN \"notifier_due\"'"
    async with notifier.dispatching(idle_poll_seconds=IDLE):
        await asyncio.sleep(0.5)
        before = set(await notifier.pool.fetchval(sql) or [])
        assert before  # (other tests' dispatchers may listen too: the channel is the database's)
        await notifier.pool.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p", list(before))
        await async_wait_until(
            lambda: _new_listener(notifier, sql, before), timeout=15, what="listening on a new connection"
        )
        data = stage_data()
        await notifier.receive(data)
        await async_wait_until(lambda: _state(notifier, data["invoice_id"], "sent"), timeout=15, what="sent")


async def _new_listener(notifier, sql: str, before: set[int]) -> bool:
    return bool(set(await notifier.pool.fetchval(sql) or []) - before)
