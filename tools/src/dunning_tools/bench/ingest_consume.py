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
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from aiokafka import TopicPartition

from dunning import tenancy
from dunning.consumer import ConsumerRunner, without_batches
from dunning.contracts import DunningPlanned, ReminderSent, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import dumps, new_event
from dunning.logging import configure_logging
from dunning_ingest import handlers as H
from dunning_tools.stack.servers import database

MIGRATIONS = migrations_of("dunning_ingest")
TENANT = "ten_bench0000CONSUME"
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
STAGES = [("pre_due", "email"), ("soft", "email"), ("firm", "email"), ("final", "letter"), ("collections", "webhook")]


class FakeConsumer:
    async def commit(self, offsets):
        pass


def planned(inv: str) -> dict:
    return new_event(
        "dunning.DunningPlanned.v1",
        {
            "invoice_id": inv,
            "tenant_id": TENANT,
            "policy_id": "pol_bench",
            "policy_version": 1,
            "planned_at": T0,
            "stages": [
                {
                    "stage_id": f"stg_{inv[4:]}S{n}",
                    "stage": s,
                    "sequence": n,
                    "channel": c,
                    "scheduled_at": T0 + timedelta(days=7 * n),
                    "state": "scheduled",
                    "reason": None,
                }
                for n, (s, c) in enumerate(STAGES)
            ],
        },
        source="/scheduler",
        subject=inv,
        tenant_id=TENANT,
    )


def escalated(inv: str) -> dict:
    return new_event(
        "dunning.StageEscalated.v1",
        {
            "stage_id": f"stg_{inv[4:]}S1",
            "invoice_id": inv,
            "tenant_id": TENANT,
            "stage": "soft",
            "sequence": 1,
            "channel": "email",
            "template": "soft",
            "scheduled_at": T0 + timedelta(days=7),
            "fired_at": T0 + timedelta(days=7, seconds=1),
            "invoice": {
                "external_id": inv,
                "number": inv,
                "currency": "EUR",
                "amount_due": "100.00",
                "balance": "100.00",
                "issue_date": "2026-11-02",
                "due_date": "2026-12-02",
                "payment_url": None,
            },
            "customer": {
                "customer_id": "cus_bench000000",
                "external_id": "C1",
                "name": "Customer",
                "email": "ap@example.com",
                "locale": "en-GB",
                "timezone": "Europe/London",
            },
        },
        source="/scheduler",
        subject=inv,
        tenant_id=TENANT,
    )


def sent(inv: str) -> dict:
    return new_event(
        "dunning.ReminderSent.v1",
        {
            "delivery_id": f"dlv_{inv[4:]}",
            "stage_id": f"stg_{inv[4:]}S1",
            "invoice_id": inv,
            "tenant_id": TENANT,
            "stage": "soft",
            "channel": "email",
            "recipient": "ap@example.com",
            "provider_message_id": f"msg-{inv}",
            "sent_at": T0 + timedelta(days=7, seconds=2),
        },
        source="/notifier",
        subject=inv,
        tenant_id=TENANT,
    )


async def feed(runner: ConsumerRunner, name: str, envelopes: list[dict], batch: int, topic: str) -> None:
    tp = TopicPartition(topic, 0)
    records = [
        SimpleNamespace(topic=topic, partition=0, offset=i, key=e["subject"].encode(), value=dumps(e), headers=())
        for i, e in enumerate(envelopes)
    ]
    consumer = FakeConsumer()
    start = time.perf_counter()
    for i in range(0, len(records), batch):
        await runner.process_batch(consumer, {tp: records[i : i + batch]})
    elapsed = time.perf_counter() - start
    assert runner.dead_lettered == 0, f"{runner.dead_lettered} dead-lettered"
    print(f"{name:<18} {len(records):>7} events  {elapsed:7.2f} s  {len(records) / elapsed:9.0f} events/s")


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
            runner = ConsumerRunner(
                name="bench",
                pool=pool,
                bootstrap_servers="unused",
                group_id="bench",
                topics=[],
                handlers=without_batches(H.HANDLERS) if args.per_event else H.HANDLERS,
            )
            print(
                f"{'per-event' if args.per_event else 'batch handlers'}, batch {args.batch}, {args.invoices} invoices"
            )
            await feed(runner, "DunningPlanned", [planned(i) for i in invoices], args.batch, topic(DunningPlanned))
            await feed(runner, "StageEscalated", [escalated(i) for i in invoices], args.batch, topic(DunningPlanned))
            await feed(runner, "ReminderSent", [sent(i) for i in invoices], args.batch, topic(ReminderSent))
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
