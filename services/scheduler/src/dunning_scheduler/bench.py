"""Firing throughput: N due timers -> StageEscalated in the outbox -> on Kafka (relay acks).

    python -m dunning_scheduler.bench [--timers 20000] [--batch 2000] [--loops 1]

Uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded PostgreSQL and
Tansu broker. Seeds a fresh schema with N/5 invoices of 5 due timers each, then runs the firing
loop(s) and the outbox relay in one process, as the service does, and prints the rates.
"""

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from dunning.db import create_pool, migrate
from dunning.kafka import ensure_topics, make_producer
from dunning.logging import configure_logging
from dunning.outbox import OutboxRelay

from dunning_scheduler.firing import FiringLoop

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

_SEED = """
INSERT INTO invoices (invoice_id, tenant_id, external_id, number, currency, amount_due, balance, issue_date,
                      due_date, payment_url, customer, issued_at, policy_id, policy_version, planned_at)
SELECT 'inv_BENCH' || lpad(i::text, 12, '0'), 'ten_bench', 'ext-' || i, 'INV-' || i, 'EUR', 1250.00, 1250.00,
       current_date - 20, current_date - 10, 'https://pay.example.com/i/' || i,
       '{"customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", "external_id": "c-1", "name": "Brandt GmbH",
         "email": "ap@example.com", "locale": "de-DE", "timezone": "Europe/Berlin"}'::jsonb,
       now() - interval '20 days', 'pol_default', 1, now()
FROM generate_series(1, $1) AS i;
INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                    policy_version)
SELECT 'stg_BENCH' || lpad(i::text, 12, '0') || s, 'ten_bench', 'inv_BENCH' || lpad(i::text, 12, '0'),
       (ARRAY['pre_due', 'soft', 'firm', 'final', 'collections'])[s + 1], s, 'email',
       (ARRAY['pre_due', 'soft', 'firm', 'final', 'collections'])[s + 1],
       now() - random() * interval '1 hour', 'scheduled', 1
FROM generate_series(1, $1) AS i, generate_series(0, 4) AS s;
"""


async def run(dsn: str, bootstrap: str, timers: int, batch: int, loops: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)
    await ensure_topics(bootstrap)
    pool = await create_pool(dsn, schema, max_size=10)
    producer = make_producer(bootstrap, "scheduler-bench")
    await producer.start()
    try:
        async with pool.acquire() as conn:
            for statement in _SEED.strip().split(";\n"):
                await conn.execute(statement.replace("$1", str(timers // 5)))
            await conn.execute("ANALYZE timers; ANALYZE invoices")
        total = await pool.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'")
        firing = [FiringLoop(pool, schema, batch_size=batch, name=f"loop{i}") for i in range(loops)]
        relay = OutboxRelay(pool, producer, schema, batch_size=2000, poll_seconds=0.05)
        start = time.perf_counter()
        tasks = [asyncio.create_task(w.run()) for w in [*firing, relay]]
        fired_at = None
        while relay.published < total:
            await asyncio.sleep(0.01)
            if fired_at is None and sum(f.fired_total for f in firing) >= total:
                fired_at = time.perf_counter() - start
        elapsed = time.perf_counter() - start
        for worker in [*firing, relay]:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(f"timers: {total}, firing batch: {batch}, loops: {loops}")
        print(f"due -> outbox (fired):   {fired_at:.2f} s  = {total / fired_at:,.0f} stages/s")
        print(f"due -> on Kafka (acked): {elapsed:.2f} s  = {total / elapsed:,.0f} stages/s")
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await producer.stop()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--loops", type=int, default=1)
    args = parser.parse_args()
    configure_logging("scheduler-bench", "WARNING")
    pg = broker = None
    dsn, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    workdir = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
    try:
        if not dsn:
            from dunning.devstack.postgres import EmbeddedPostgres
            from dunning.devstack.procs import free_port

            pg = EmbeddedPostgres(workdir / "pgdata", free_port(), durable=False)
            dsn = pg.start()
        if not bootstrap:
            from dunning.devstack.procs import free_port
            from dunning.devstack.tansu import TansuBroker

            broker = TansuBroker(free_port(), log_path=workdir / "tansu.log")
            bootstrap = broker.start()
        asyncio.run(run(dsn, bootstrap, args.timers, args.batch, args.loops))
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.stop()


if __name__ == "__main__":
    main()
