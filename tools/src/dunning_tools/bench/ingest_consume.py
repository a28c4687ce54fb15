"""The timeline consumer's throughput: N invoices' DunningPlanned (5 stages each), then a
StageEscalated and a ReminderSent per invoice, fed through `ConsumerRunner.process_batch` (the
consumer's real path: decode, inbox, handlers, one transaction per batch) with a fake broker
consumer, against an embedded PostgreSQL (fsync on unless --no-fsync).

    .venv/bin/python -m dunning_tools.bench.ingest_consume [--invoices N] [--batch 500] [--per-event] 2>/dev/null

--per-event runs without batch handlers (the reference path). Nothing is asserted.
"""

import argparse
import asyncio
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dunning import tenancy
from dunning.consumer import ConsumerRunner
from dunning.contracts import DunningPlanned, ReminderSent, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.logging import configure_logging
from dunning_ingest import handlers as H
from dunning_tools.stack.servers import database
from dunning_tools.testing.events import dunning_planned, planned_stage, reminder_sent, stage_escalated
from dunning_tools.testing.runner import feed, records, runner_on

MIGRATIONS = migrations_of("dunning_ingest")
TENANT = "ten_bench0000CONSUME"
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
STAGES = [("pre_due", "email"), ("soft", "email"), ("firm", "email"), ("final", "letter"), ("collections", "webhook")]


def planned(inv: str) -> dict:
    stages = [
        planned_stage(f"stg_{inv[4:]}S{n}", s, n, T0 + timedelta(days=7 * n), channel=c)
        for n, (s, c) in enumerate(STAGES)
    ]
    return dunning_planned(tenant_id=TENANT, invoice_id=inv, stages=stages, planned_at=T0, policy_id="pol_bench")


def escalated(inv: str) -> dict:
    scheduled_at = T0 + timedelta(days=7)
    return stage_escalated(
        tenant_id=TENANT,
        invoice_id=inv,
        stage_id=f"stg_{inv[4:]}S1",
        scheduled_at=scheduled_at,
        fired_at=scheduled_at + timedelta(seconds=1),
    )


def sent(inv: str) -> dict:
    return reminder_sent(
        tenant_id=TENANT,
        invoice_id=inv,
        stage_id=f"stg_{inv[4:]}S1",
        delivery_id=f"dlv_{inv[4:]}",
        provider_message_id=f"msg-{inv}",
        sent_at=T0 + timedelta(days=7, seconds=2),
    )


async def timed(runner: ConsumerRunner, name: str, envelopes: list[dict], batch: int, topic: str) -> None:
    elapsed = sum(await feed(runner, records(envelopes, topic=topic), batch))
    assert runner.dead_lettered == 0, f"{runner.dead_lettered} dead-lettered"
    print(f"{name:<18} {len(envelopes):>7} events  {elapsed:7.2f} s  {len(envelopes) / elapsed:9.0f} events/s")


async def run(args) -> None:
    configure_logging("bench-consume", "INFO")  # as in production (JSON lines on stderr)
    workdir = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    with database(workdir, durable=not args.no_fsync) as db:
        schema = "bench_consume"
        migrate(db.dsn, schema, MIGRATIONS)
        pool = await create_pool(db.dsn, schema, max_size=4)
        try:
            run_id = uuid.uuid4().hex[:8]
            invoices = [f"inv_{run_id}{i:08d}" for i in range(args.invoices)]
            async with pool.acquire() as conn:
                await tenancy.provision(conn, TENANT, "Bench", "dk_bench_consume_0123456789")
                await conn.execute(
                    "INSERT INTO invoices (id, tenant_id, external_id, number, customer_id, currency, amount_due,"
                    " balance, issue_date, due_date, content_hash, created_at)"
                    " SELECT i, $2, i, i, 'cus_bench', 'EUR', 100, 100, '2026-11-02', '2026-12-02', '\\x00', now()"
                    " FROM unnest($1::text[]) AS i",
                    invoices,
                    TENANT,
                )
                await conn.execute("ANALYZE")
            runner = runner_on(pool, H.HANDLERS, batch=not args.per_event, name="bench", handler_attempts=3)
            print(
                f"{'per-event' if args.per_event else 'batch handlers'}, batch {args.batch}, {args.invoices} invoices"
            )
            await timed(runner, "DunningPlanned", [planned(i) for i in invoices], args.batch, topic(DunningPlanned))
            await timed(runner, "StageEscalated", [escalated(i) for i in invoices], args.batch, topic(DunningPlanned))
            await timed(runner, "ReminderSent", [sent(i) for i in invoices], args.batch, topic(ReminderSent))
            assert runner.dead_lettered == 0, runner.dead_lettered
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--per-event", action="store_true")
    parser.add_argument("--no-fsync", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
