"""Scheduler throughput: planning (InvoiceIssued -> timers + DunningPlanned) and firing.

    python -m dunning_tools.bench.scheduler [plan|fire|all] [--invoices 20000] [--timers 20000] ...

plan: N InvoiceIssued events (one tenant with a stored policy, customers in several zones, a share of
      old invoices imported late) are applied through the real `ConsumerRunner.process_batch`
      (decode, inbox, handler, one transaction per batch of --consumer-batch); then --payments
      settling PaymentReceived events one at a time (the latency a payer's acknowledgement waits
      before the pending reminders are cancelled), then the same number in batches.
fire: N/5 invoices of 5 due timers each; the firing loop(s) and the outbox relay run in one
      process, as the service does: due -> StageEscalated in the outbox -> acked by Kafka.

Uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded PostgreSQL (and, for
`fire`, the Tansu broker). Logs are rendered at --log-level (as the service does) and discarded.
"""

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from dunning import tenancy
from dunning.clock import utcnow
from dunning.contracts import InvoiceIssued, PaymentReceived, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import new_event
from dunning.ids import new_id
from dunning.logging import configure_logging
from dunning.tracing import configure_tracing
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.stack.servers import broker, database
from dunning_tools.testing.events import payment_received
from dunning_tools.testing.runner import feed, records, runner_on

MIGRATIONS = migrations_of("dunning_scheduler")
TENANT = "ten_bench"
ZONES = ("Europe/Berlin", "America/New_York", "Europe/London", "Asia/Tokyo", "UTC")
POLICY = {
    "id": "pol_bench",
    "anchor": "due_date",
    "send_time": "09:00",
    "stages": [
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D"},
        {"name": "firm", "offset": "P7D", "channels": ["email", "letter"]},
        {"name": "final", "offset": "P14D", "template": "final_strict"},
        {"name": "collections", "offset": "P30D", "channels": ["webhook"]},
    ],
}

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


def _invoice_issued(i: int) -> dict:
    invoice_id = new_id("inv")
    now = utcnow()
    # One in ten is an old invoice imported late (past stages skipped, the latest one due now).
    due = now.date() - timedelta(days=20) if i % 10 == 0 else now.date() + timedelta(days=7 + i % 60)
    return new_event(
        "dunning.InvoiceIssued.v1",
        {
            "invoice_id": invoice_id,
            "tenant_id": TENANT,
            "external_id": f"ext-{i}",
            "number": f"INV-{i:08d}",
            "customer": {
                "customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V",
                "external_id": f"c-{i % 500}",
                "name": "Brandt & Söhne GmbH",
                "email": "ap@brandt-soehne.de",
                "locale": "de-DE",
                "timezone": ZONES[i % len(ZONES)],
            },
            "currency": "EUR",
            "amount_due": "1250.00",
            "issue_date": due - timedelta(days=14),
            "due_date": due,
            "payment_url": f"https://pay.example.com/i/{i}",
            "metadata": {"po": str(i)},
            "issued_at": now,
        },
        source="/invoice-ingest",
        subject=invoice_id,
        tenant_id=TENANT,
    )


def _payment(invoice_id: str) -> dict:
    return payment_received(invoice_id, tenant_id=TENANT, balance="0.00", settled=True, amount="1250.00")


async def bench_plan(
    dsn: str, invoices: int, batch: int, payments: int, default_policy: bool, batch_handlers: bool
) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema, max_size=4)
    try:
        async with pool.acquire() as conn:
            await tenancy.provision(conn, TENANT, "Bench", f"dk_bench_{uuid.uuid4().hex}")
            if not default_policy:
                await save_policy(conn, TENANT, parse_policy(POLICY))
        handlers = handlers_for(ActivePolicies())
        runner = runner_on(
            pool, handlers, batch=batch_handlers, name="scheduler-bench", batch_max=batch, handler_attempts=3
        )
        warm = records([_invoice_issued(i) for i in range(200)], topic=topic(InvoiceIssued))
        await feed(runner, warm, batch)
        envelopes = [_invoice_issued(i) for i in range(invoices)]
        issued = records(envelopes, topic=topic(InvoiceIssued), first_offset=len(warm))
        invoice_ids = [e["subject"] for e in envelopes]
        del envelopes
        gc.collect()  # the bench's own garbage is not the consumer's cost
        await pool.execute("ANALYZE")
        cpu = time.process_time()
        elapsed = sum(await feed(runner, issued, batch))
        cpu = time.process_time() - cpu
        planned = await pool.fetchval("SELECT count(*) FROM invoices WHERE planned_at IS NOT NULL")
        timers = await pool.fetchval("SELECT count(*) FROM timers")
        outbox = await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'dunning.DunningPlanned.v1'")
        if planned != invoices + len(warm) or outbox != planned or runner.dead_lettered:
            raise SystemExit(f"plan: {planned} planned, {outbox} DunningPlanned, {runner.dead_lettered} dead letters")
        print(
            f"invoices: {invoices}, consumer batch: {batch}, policy: {'default' if default_policy else 'stored'},"
            f" handlers: {'batch' if batch_handlers else 'per event'}"
        )
        print(
            f"InvoiceIssued -> timers + DunningPlanned: {elapsed:.2f} s = {invoices / elapsed:,.0f} invoices/s"
            f"  ({timers:,} timers)"
        )
        print(
            f"  this process's CPU: {cpu * 1e6 / invoices:.0f} us an invoice; waiting on PostgreSQL:"
            f" {max(0.0, elapsed - cpu) * 1e6 / invoices:.0f} us an invoice"
        )
        if payments:
            chosen = invoice_ids[1 : payments * 2 : 2]
            offset = len(warm) + invoices
            paying = topic(PaymentReceived)
            one_by_one = records([_payment(i) for i in chosen[: payments // 2]], topic=paying, first_offset=offset)
            lat = sorted(await feed(runner, one_by_one, 1))
            batched = records(
                [_payment(i) for i in chosen[payments // 2 :]], topic=paying, first_offset=offset + payments
            )
            seconds = sum(await feed(runner, batched, batch))
            cancelled = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE event_type = 'dunning.StagesCancelled.v1'"
            )
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(
                f"PaymentReceived (settling), one per batch: p50 {statistics.median(lat) * 1000:.2f} ms,"
                f" p99 {p99 * 1000:.2f} ms  ({cancelled} StagesCancelled in all)"
            )
            print(f"PaymentReceived (settling), batched:       {len(batched) / seconds:,.0f} payments/s")
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()


async def bench_fire(dsn: str, bootstrap: str, timers: int, batch: int, loops: int) -> None:
    from dunning.kafka import ensure_topics, make_producer
    from dunning.outbox import OutboxRelay

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
            # The gate is on, as in production: one statement per acknowledging service that covers
            # every timer.
            await conn.execute(
                "INSERT INTO watermark_statements (statement_id, source, watermark, computed_at)"
                " SELECT gen_random_uuid(), source, now() + interval '1 hour', now()"
                " FROM unnest(ARRAY['reconciliation', 'invoice-ingest']) AS source"
            )
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
    parser.add_argument("what", nargs="?", choices=("plan", "fire", "all"), default="all")
    parser.add_argument("--invoices", type=int, default=20000, help="plan: InvoiceIssued events")
    parser.add_argument("--consumer-batch", type=int, default=500, help="plan: records per consumer batch")
    parser.add_argument("--payments", type=int, default=400, help="plan: settling payments afterwards")
    parser.add_argument("--default-policy", action="store_true", help="plan: no stored tenant policy")
    parser.add_argument(
        "--batch-handlers",
        action="store_true",
        help="plan: let the runner use the table's batch handlers (default: per event only)",
    )
    parser.add_argument("--timers", type=int, default=20000, help="fire: due timers")
    parser.add_argument("--batch", type=int, default=2000, help="fire: firing batch size")
    parser.add_argument("--loops", type=int, default=1, help="fire: firing loops")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        configure_logging("scheduler-bench", args.log_level)
    configure_tracing("scheduler-bench", "none")
    workdir = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
    try:
        with database(workdir) as db:
            if args.what in ("plan", "all"):
                asyncio.run(
                    bench_plan(
                        db.dsn,
                        args.invoices,
                        args.consumer_batch,
                        args.payments,
                        args.default_policy,
                        args.batch_handlers,
                    )
                )
            if args.what in ("fire", "all"):
                with broker(workdir) as bootstrap:
                    asyncio.run(bench_fire(db.dsn, bootstrap, args.timers, args.batch, args.loops))
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    main()
