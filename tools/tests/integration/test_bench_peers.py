"""The platform on the peers' workload, small: every unpaid reminder recorded once, no paid one."""

import asyncpg
import pytest

from dunning_tools.bench.peers import bench
from dunning_tools.bench.peers.__main__ import server_of
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration

N = 300


@pytest.fixture
def own_broker(tmp_path, monkeypatch):
    """A broker of its own: the contender reads the whole stages topic, which tests share otherwise."""
    tansu = TansuBroker(free_port(), log_path=tmp_path / "tansu.log")
    monkeypatch.setenv("PEERS_KAFKA", tansu.start())
    yield
    tansu.stop()


async def test_the_platform_records_each_unpaid_reminder_once_and_no_paid_one(infra, own_broker, tmp_path):
    args = bench.parse_args(
        ["--server", server_of(infra.database_url), "-n", str(N), "--libs", "dunning", "--log-dir", str(tmp_path),
         "--single-enqueue", "100", "--single-cancel", "30", "--batch-size", "50", "--stall-timeout", "60"]
    )  # fmt: skip

    res = await bench.run_once("dunning", args, str(tmp_path), 1)

    assert (res.expected, res.cancelled) == (210, 90)
    assert res.runnable_before_workers == 210, res.notes
    assert (res.executed, res.cancelled_but_sent, res.duplicates) == (210, 0, 0), res.detail()
    assert res.ok and res.execute_rate > 0
    assert (res.states["timers:fired"], res.states["timers:cancelled"]) == (210, 90)
    assert res.worker_exit_codes == [0, 0]


async def test_the_checks_count_a_paid_reminder_recorded_and_one_recorded_twice(infra, own_broker, tmp_path):
    args = bench.parse_args(
        ["--server", server_of(infra.database_url), "-n", "60", "--libs", "dunning", "--log-dir", str(tmp_path),
         "--stall-timeout", "60"]
    )  # fmt: skip
    res = await bench.run_once("dunning", args, str(tmp_path), 1)
    assert res.ok, res.detail()
    dsn = bench.common.dsn_for(args.server, "peer_dunning")
    conn = await asyncpg.connect(dsn)
    try:
        paid = await conn.fetchval("SELECT min(invoice_id) FROM paid")
        sent = await conn.fetchval("SELECT min(invoice_id) FROM sent")
        for invoice in (paid, sent):  # what a cancel that did not hold, and a second run, would write
            await conn.execute(bench.common.UPSERT_ASYNCPG, invoice, bench.common.STAGE)
    finally:
        await conn.close()

    out = await bench.common.outcome(dsn)

    assert (out["executed"], out["cancelled_but_sent"], out["duplicates"]) == (43, 1, 1)
