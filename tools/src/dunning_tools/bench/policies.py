"""Scheduler throughput with issue 10's policies in force, beside the plain figures.

    python -m dunning_tools.bench.policies [plan|fire|all] [--invoices 20000] [--timers 20000] ...

plan: the same InvoiceIssued load as `bench.scheduler plan` (through the real
      `ConsumerRunner.process_batch`), once for a tenant with one stored policy (plain) and once for a
      tenant with three named policies chosen by three segment rules (tags, amount and currency, and
      payment history over the last 5 settled invoices: every customer has settled history), a DE
      working calendar (Bavarian holidays, Mon-Fri, closure days), business-day offsets with grace
      and a minimum balance, and a Mon-Fri 08:00-17:00 send window spreading over an hour.
fire: due timers planned through the same path (stages a second or so after issue), then fired by
      the firing loop with the outbox relay to Kafka: once for a plain tenant and once for a tenant
      with a window open now, a contact cap and quiet period that do not defer, and consolidation
      (one notice per customer and channel: 5 invoices of 4 stages a customer).

Configuration goes through the scheduler's own HTTP API, in process (PUT /v1/policies/...,
/v1/policy-rules, /v1/settings), so the bench stores what a tenant would. Figures only.
"""

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from dunning import tenancy
from dunning.clock import utcnow
from dunning.contracts import InvoiceIssued, PaymentReceived, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import new_event
from dunning.ids import new_id
from dunning.logging import configure_logging
from dunning.tracing import configure_tracing
from dunning_scheduler.api import create_app
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.settings import Settings
from dunning_tools.stack.servers import broker, database
from dunning_tools.testing.events import payment_received
from dunning_tools.testing.runner import feed, records, runner_on

MIGRATIONS = migrations_of("dunning_scheduler")
ZONES = ("Europe/Berlin", "America/New_York", "Europe/London", "Asia/Tokyo", "UTC")
CUSTOMERS = 1000
API_KEY = "dk_bench_policies_0123456789abcdef"
STAGES = [
    {"name": "pre_due", "offset": "-P3D"},
    {"name": "soft", "offset": "P1D", "late_fee": {"EUR": "40.00"}},
    {"name": "firm", "offset": "P7D", "channels": ["email", "letter"], "charge_interest": True},
    {"name": "final", "offset": "P14D", "template": "final_strict", "charge_interest": True},
    {"name": "collections", "offset": "P30D", "channels": ["webhook"]},
]
PLAIN = {"id": "pol_bench", "anchor": "due_date", "send_time": "09:00", "stages": STAGES}
NAMED = {
    "pol_gentle": {**PLAIN, "id": "pol_gentle", "days": "business", "grace": "P3D"},
    "pol_light": {**PLAIN, "id": "pol_light", "days": "business", "minimum_balance": {"EUR": "10.00"}},
    "pol_firm": {
        **PLAIN,
        "id": "pol_firm",
        "days": "business",
        "non_working_day": "previous",
        "interest": {"annual_rate": "8.00", "day_count": "ACT/365F"},
    },
    "pol_standard": {**PLAIN, "id": "pol_standard", "days": "business", "grace": "P2D"},
}
RULES = {
    "rules": [
        {"name": "strategic", "policy_id": "pol_gentle", "when": {"tags_any": ["strategic"]}},
        {"name": "small", "policy_id": "pol_light", "when": {"currency": ["EUR"], "amount_max": "100.00"}},
        {
            "name": "late_payers",
            "policy_id": "pol_firm",
            "when": {"average_days_late_min": 15, "history_invoices": 5, "history_min_invoices": 2},
        },
    ],
    "default_policy_id": "pol_standard",
}
CALENDAR = {
    "working_days": ["mon", "tue", "wed", "thu", "fri"],
    "holidays": "customer",
    "country": "DE",
    "subdivision": "BY",
    "closures": ["2026-12-24", "2026-12-31"],
}
WINDOW = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"}
OPEN_NOW = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "23:59:59"}


def _customer(tenant: str, i: int) -> dict:
    c = i % CUSTOMERS
    customer: dict[str, object] = {
        "customer_id": f"cus_01JB2F7H9K3M5N7P9Q{c:08d}",
        "external_id": f"c-{c}",
        "name": "Brandt & Söhne GmbH",
        "email": "ap@brandt-soehne.de",
        "locale": "de-DE",
        "timezone": ZONES[c % len(ZONES)],
        "country": "DE",
        "subdivision": "BY",
    }
    if c % 7 == 0:
        customer["tags"] = ["strategic", "dach"]
    return customer


def _issued(tenant: str, i: int, *, due_in: int | None = None, amount: str | None = None, seconds: bool = False):
    invoice_id = new_id("inv")
    now = utcnow()
    due = now.date() + timedelta(days=due_in if due_in is not None else (-20 if i % 10 == 0 else 7 + i % 60))
    return new_event(
        "dunning.InvoiceIssued.v1",
        {
            "invoice_id": invoice_id,
            "tenant_id": tenant,
            "external_id": f"ext-{i}",
            "number": f"INV-{i:08d}",
            "customer": _customer(tenant, i),
            "currency": "EUR",
            "amount_due": amount or ("80.00" if i % 5 == 0 else "1250.00"),
            "issue_date": due - timedelta(days=14),
            "due_date": due,
            "payment_url": f"https://pay.example.com/i/{i}",
            "metadata": {"po": str(i)},
            "issued_at": now,
        },
        source="/invoice-ingest",
        subject=invoice_id,
        tenant_id=tenant,
    )


async def _configure(pool, schema: str, tenant: str, dsn: str, *, policies: dict, rules=None, settings=None) -> None:
    """Store the tenant's documents through the scheduler's API, in process, as a tenant would."""
    async with pool.acquire() as conn:
        await tenancy.provision(conn, tenant, "Bench", f"{API_KEY}{tenant}")
    app = create_app(pool, Settings(database_url=dsn, db_schema=schema, kafka_bootstrap_servers="127.0.0.1:1"))
    auth = {"Authorization": f"Bearer {API_KEY}{tenant}", "Dunning-Actor": "bench"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b", headers=auth) as api:
        for policy_id, document in policies.items():
            path = "/v1/policy" if policy_id == "" else f"/v1/policies/{policy_id}"
            r = await api.put(path, json=document)
            r.raise_for_status()
        for path, document in (("/v1/policy-rules", rules), ("/v1/settings", settings)):
            if document is not None:
                r = await api.put(path, json=document)
                if r.status_code >= 300:
                    raise SystemExit(f"bench: PUT {path} answered {r.status_code}: {r.text}")


async def _history(runner, tenant: str, offset: int, batch: int) -> int:
    """Five settled invoices a customer (settled today), 2-6, 17-21 or 32-36 days late by customer."""
    old = [_issued(tenant, i, due_in=-(2 + (i % CUSTOMERS % 3) * 15 + i // CUSTOMERS)) for i in range(CUSTOMERS * 5)]
    await feed(runner, records(old, topic=topic(InvoiceIssued), first_offset=offset), batch)
    offset += len(old)
    paid = [
        payment_received(e["subject"], tenant_id=tenant, balance="0.00", settled=True, amount=e["data"]["amount_due"])
        for e in old
    ]
    await feed(runner, records(paid, topic=topic(PaymentReceived), first_offset=offset), batch)
    return offset + len(paid)


async def bench_plan(dsn: str, invoices: int, batch: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema, max_size=4)
    try:
        plain, shaped = "ten_bench_plain", "ten_bench_rules"
        await _configure(pool, schema, plain, dsn, policies={"": PLAIN})
        await _configure(
            pool,
            schema,
            shaped,
            dsn,
            policies=NAMED,
            rules=RULES,
            settings={"calendar": CALENDAR, "send_window": WINDOW},
        )
        runner = runner_on(pool, handlers_for(ActivePolicies()), batch=False, name="policies-bench", handler_attempts=3)
        offset = await _history(runner, shaped, 0, batch)
        figures: dict[str, list[tuple[float, float]]] = {}
        for tenant in (plain, shaped, plain, shaped):  # alternated: neither gets the warmer cache
            warm = records([_issued(tenant, i) for i in range(200)], topic=topic(InvoiceIssued), first_offset=offset)
            await feed(runner, warm, batch)
            offset += len(warm)
            issued = records(
                [_issued(tenant, i) for i in range(invoices)], topic=topic(InvoiceIssued), first_offset=offset
            )
            offset += len(issued)
            gc.collect()
            await pool.execute("ANALYZE")
            cpu = time.process_time()
            elapsed = sum(await feed(runner, issued, batch))
            cpu = time.process_time() - cpu
            figures.setdefault(tenant, []).append((invoices / elapsed, cpu * 1e6 / invoices))
        try:
            chosen = await pool.fetch(
                "SELECT coalesce(segment_rule, '?') AS rule, count(*) AS n FROM invoices"
                " WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1",
                shaped,
            )
        except Exception as exc:  # the column's name is the planner's: the figure stands without it
            chosen = [{"rule": f"(not read: {exc})", "n": ""}]
        if runner.dead_lettered:
            raise SystemExit(f"plan: {runner.dead_lettered} dead letters")
        print(f"invoices: {invoices} a run, consumer batch: {batch}, handlers: per event, best of two alternated runs")
        for tenant, label in ((plain, "plain (one stored policy)"), (shaped, "segments + DE calendar + window")):
            rate, cpu = max(figures[tenant])
            print(f"InvoiceIssued -> timers + DunningPlanned, {label:<33} {rate:>8,.0f} invoices/s  ({cpu:.0f} us CPU)")
        print(
            "  rules chosen (every invoice of the tenant, the settled history included): "
            + ", ".join(f"{r['rule']} {r['n']}" for r in chosen)
        )
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()


async def bench_fire(dsn: str, bootstrap: str, timers: int, batch: int) -> None:
    from dunning.kafka import ensure_topics, make_producer
    from dunning.outbox import OutboxRelay

    await ensure_topics(bootstrap)
    producer = make_producer(bootstrap, "policies-bench")
    await producer.start()
    try:
        policy = {
            "anchor": "issued_at",
            "stages": [
                {"name": n, "offset": f"PT{1 + s}S"} for s, n in enumerate(("pre_due", "soft", "firm", "final"))
            ],
        }
        shaped = {
            "send_window": OPEN_NOW,
            "contact_caps": {"max_reminders": 1000, "period": "P1D", "quiet_period": "PT1S"},
            "consolidation": {"enabled": True},
        }
        for label, settings in (("plain", None), ("window + caps + consolidation", shaped)):
            await _fire_once(dsn, producer, OutboxRelay, timers, batch, label, policy, settings)
    finally:
        await producer.stop()


async def _fire_once(dsn, producer, relay_class, timers: int, batch: int, label: str, policy, settings) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema, max_size=10)
    tenant = "ten_bench_fire"
    try:
        await _configure(pool, schema, tenant, dsn, policies={"": policy}, settings=settings)
        runner = runner_on(pool, handlers_for(ActivePolicies()), batch=False, name="policies-bench", handler_attempts=3)
        count = timers // len(policy["stages"])
        issued = [_issued(tenant, i, due_in=-5) for i in range(count)]
        await feed(runner, records(issued, topic=topic(InvoiceIssued)), 500)
        await pool.execute(
            # The gate is on, as in production, covering every timer: its time and (the timers were
            # planned from InvoiceIssued records at offsets of partition 0) its invoice's position.
            "INSERT INTO watermark_statements (statement_id, source, watermark, computed_at, invoice_positions)"
            " SELECT gen_random_uuid(), source, now() + interval '1 hour', now(), '{\"0\": 1000000000}'::jsonb"
            " FROM unnest(ARRAY['reconciliation', 'invoice-ingest']) AS source"
        )
        await pool.execute("ANALYZE")
        due = await pool.fetchval("SELECT max(scheduled_at) FROM timers WHERE state = 'scheduled'")
        await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds() + 0.5))
        total = await pool.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'")
        relay = relay_class(pool, producer, schema, batch_size=2000, poll_seconds=0.05)
        tasks = [asyncio.create_task(relay.run())]  # the planning's events go first, outside the measure
        while await pool.fetchval("SELECT count(*) FROM outbox"):
            await asyncio.sleep(0.05)
        base = relay.published
        loop = FiringLoop(pool, schema, batch_size=batch, name="loop0")
        start = time.perf_counter()
        tasks.append(asyncio.create_task(loop.run()))
        fired_at = None
        while fired_at is None or await pool.fetchval("SELECT count(*) FROM outbox"):
            await asyncio.sleep(0.01)
            left = await pool.fetchval(
                "SELECT count(*) FROM timers WHERE state = 'scheduled' AND scheduled_at <= now()"
            )
            if fired_at is None and left == 0:
                fired_at = time.perf_counter() - start
            if time.perf_counter() - start > 300:
                raise SystemExit(f"fire ({label}): {left} timers still due after 300 s")
        elapsed = time.perf_counter() - start
        for worker in (loop, relay):
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        states = await pool.fetch("SELECT state, count(*) AS n FROM timers GROUP BY 1 ORDER BY 1")
        print(f"firing, {label}: {total} due timers ({CUSTOMERS} customers), firing batch {batch}")
        print(f"  due -> outbox (fired):   {fired_at:.2f} s = {total / fired_at:,.0f} stages/s")
        print(f"  due -> on Kafka (acked): {elapsed:.2f} s = {total / elapsed:,.0f} stages/s")
        print(
            f"  {relay.published - base} events published; timers: "
            + ", ".join(f"{r['state']} {r['n']}" for r in states)
        )
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("plan", "fire", "all"), default="all")
    parser.add_argument("--invoices", type=int, default=20000, help="plan: InvoiceIssued events a run")
    parser.add_argument("--consumer-batch", type=int, default=500, help="plan: records per consumer batch")
    parser.add_argument("--timers", type=int, default=20000, help="fire: due timers")
    parser.add_argument("--batch", type=int, default=2000, help="fire: firing batch size")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        configure_logging("policies-bench", args.log_level)
    configure_tracing("policies-bench", "none")
    workdir = Path(tempfile.mkdtemp(prefix="policies-bench-"))
    try:
        with database(workdir) as db:
            if args.what in ("plan", "all"):
                asyncio.run(bench_plan(db.dsn, args.invoices, args.consumer_batch))
            if args.what in ("fire", "all"):
                with broker(workdir) as bootstrap:
                    asyncio.run(bench_fire(db.dsn, bootstrap, args.timers, args.batch))
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    main()
