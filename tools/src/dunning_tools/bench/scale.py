"""Scale (issue 13, item 4): the scheduler with ten million pending timers, against 10,000.

    python -m dunning_tools.bench.scale [--quick] [--timers 10000000] [--reference 10000]

Two schemas on one embedded PostgreSQL (fsync on): each gets its pending timers by COPY, copies of
the plans the real planning path wrote for a few template invoices (the same stages, channels,
templates and invoice snapshot, due 7 to 127 days ahead), then VACUUM ANALYZE. Then, in rounds that
alternate the two sizes, with the real firing loop and a watermark ticker (both acknowledging
services' statements every 0.25 s through the real handlers, as reconciliation and invoice-ingest
send them) running in this process:

- planning: InvoiceIssued events (due weeks ahead) through `ConsumerRunner.process_batch` with the
  service's batch handlers, 500 a batch: invoices planned per second;
- firing: a trickle of invoices planned through the same path, one stage each, due one after the
  other over --window seconds; lateness = fired_at - scheduled_at (the database's clock), p50/p99,
  and each stage fired exactly once (one StageEscalated in the outbox).

Each round's invoices are deleted afterwards, so each schema keeps its size. The size per timer is
pg_relation_size + pg_indexes_size of the tables the scheduler keeps per plan (timers, invoices),
over the pending timers. Figures: .run/bench-scale.json (docs/bench-scale.md).
"""

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import asyncpg

from dunning import tenancy
from dunning.clock import utcnow
from dunning.consumer import ConsumerRunner
from dunning.contracts import InvoiceIssued, PaymentsWatermark, StopsWatermark, topic
from dunning.db import _init_connection as init_connection
from dunning.db import connect, create_pool, migrate, migrations_of
from dunning.events import new_event
from dunning.logging import configure_logging
from dunning.tracing import configure_tracing
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.bench import figures
from dunning_tools.bench.scale_copy import copy_plans, day_of
from dunning_tools.bench.scheduler import POLICY, ZONES
from dunning_tools.stack.servers import database
from dunning_tools.testing.events import invoice_issued
from dunning_tools.testing.runner import feed, records, runner_on

MIGRATIONS = migrations_of("dunning_scheduler")
TENANT = "ten_scale"  # the pending timers and the planning rounds: the five-stage policy of bench.scheduler
TRICKLE = "ten_trickle"  # the firing rounds: one stage, a second after the invoice's issued_at
TRICKLE_POLICY = {"id": "pol_trickle", "anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT1S"}]}
INVOICES_TOPIC = topic(InvoiceIssued)
WATERMARKS_TOPIC = topic(PaymentsWatermark)
TICK = 0.25  # reconciliation's default watermark_interval_seconds
CONSUMER_BATCH = 500
_SIZE = """
SELECT c.relname AS name, pg_relation_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes,
       pg_total_relation_size(c.oid) AS total_bytes
FROM pg_class AS c WHERE c.oid IN ('timers'::regclass, 'invoices'::regclass) ORDER BY c.relname
"""


@dataclass
class Side:
    """One schema: its pending timers, pool, runners and the invoices topic's next offset."""

    label: str
    timers: int
    dsn: str
    schema: str = field(default_factory=lambda: f"scale_{uuid.uuid4().hex[:8]}")
    pool: asyncpg.Pool = field(init=False)
    runner: ConsumerRunner = field(init=False)  # InvoiceIssued
    ticker: ConsumerRunner = field(init=False)  # the watermark statements
    policies: ActivePolicies = field(default_factory=ActivePolicies)
    offset: int = 0  # next offset on the invoices topic (the trickle's gate positions)
    ticks: int = 0
    generated: int = 0
    generate_seconds: float = 0.0
    copy_seconds: float = 0.0

    async def open(self) -> None:
        migrate(self.dsn, self.schema, MIGRATIONS)
        self.pool = await create_pool(self.dsn, self.schema, max_size=8)
        handlers = handlers_for(self.policies)
        self.runner = runner_on(self.pool, handlers, name=f"scale-{self.label}", batch_max=CONSUMER_BATCH)
        self.ticker = runner_on(self.pool, handlers, name=f"scale-{self.label}-watermarks")
        async with self.pool.acquire() as conn:
            for tenant, policy in ((TENANT, POLICY), (TRICKLE, TRICKLE_POLICY)):
                await tenancy.provision(conn, tenant, tenant, f"dk_{tenant}_{uuid.uuid4().hex}")
                await save_policy(conn, tenant, parse_policy(policy))

    async def plan(self, envelopes: list[dict]) -> float:
        """Plan the events through the real consumer path; returns the seconds the batches took."""
        recs = records(envelopes, topic=INVOICES_TOPIC, first_offset=self.offset)
        self.offset += len(recs)
        return sum(await feed(self.runner, recs, CONSUMER_BATCH))

    async def tick(self) -> None:
        """Both acknowledging services' statements, now (payments and stops all applied)."""
        now = utcnow()
        payments = {
            "watermark": now,
            "payments_topic": "dunning.payments.v1",
            "payments_offsets": {"0": 0},
            "invoices_topic": INVOICES_TOPIC,
            "invoice_positions": {"0": self.offset},
            "computed_at": now,
        }
        stops = {
            "service": "invoice-ingest",
            "watermark": now,
            "offsets": {INVOICES_TOPIC: {"0": 0}},
            "computed_at": now,
        }
        envelopes = [
            new_event(
                PaymentsWatermark.TYPE,
                payments,
                source=PaymentsWatermark.SOURCE,
                subject="_payments",
                tenant_id="_system",
            ),
            new_event(
                StopsWatermark.TYPE, stops, source=StopsWatermark.SOURCE, subject="_invoice-ingest", tenant_id="_system"
            ),
        ]
        await feed(self.ticker, records(envelopes, topic=WATERMARKS_TOPIC, first_offset=self.ticks), 2)
        self.ticks += 2

    async def forget(self, invoice_ids: list[str]) -> None:
        """Delete a round's invoices, timers and outbox rows (the schema keeps its size)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM timers WHERE invoice_id = ANY($1::text[])", invoice_ids)
            await conn.execute("DELETE FROM invoices WHERE invoice_id = ANY($1::text[])", invoice_ids)
            await conn.execute("DELETE FROM outbox WHERE key = ANY($1::text[])", invoice_ids)

    async def sizes(self) -> dict:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_SIZE)
            pending = await conn.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'")
        per = sum(r["table_bytes"] + r["index_bytes"] for r in rows) / pending
        return {
            "tables": {r["name"]: dict(r) for r in rows},
            "bytes_per_timer": round(per, 1),
            "pending_timers": pending,
        }


async def generate(side: Side) -> None:
    """COPY `side.timers` pending timers (and their invoices), shaped on plans the planner wrote, then
    VACUUM ANALYZE."""
    today = date.today()
    templates = [invoice_issued(tenant_id=TENANT, due_date=today + timedelta(days=30), timezone=zone) for zone in ZONES]
    await side.plan(templates)
    ids = [e["subject"] for e in templates]
    async with side.pool.acquire() as conn:
        invoices = {
            r["invoice_id"]: r for r in await conn.fetch("SELECT * FROM invoices WHERE invoice_id = ANY($1)", ids)
        }
        timers = await conn.fetch(
            "SELECT * FROM timers WHERE invoice_id = ANY($1) ORDER BY invoice_id, sequence, channel", ids
        )
    shapes = []  # per template: (invoice row, [(timer row)])
    for invoice_id in ids:
        shapes.append((invoices[invoice_id], [t for t in timers if t["invoice_id"] == invoice_id]))
    copied = await copy_plans(side.dsn, side.schema, shapes, side.timers)
    side.generated, side.copy_seconds, side.generate_seconds = copied.timers, copied.copy_seconds, copied.seconds


async def plan_round(side: Side, n: int) -> float:
    """Invoices planned per second through the real path: n InvoiceIssued, due weeks ahead."""
    today = date.today()
    envelopes = [
        invoice_issued(tenant_id=TENANT, due_date=today + timedelta(days=day_of(i)), timezone=ZONES[i % len(ZONES)])
        for i in range(n)
    ]
    gc.collect()  # the bench's own garbage is not the planner's cost
    seconds = await side.plan(envelopes)
    ids = [e["subject"] for e in envelopes]
    async with side.pool.acquire() as conn:
        planned = await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE invoice_id = ANY($1) AND planned_at IS NOT NULL", ids
        )
    if planned != n or side.runner.dead_lettered:
        raise RuntimeError(f"{side.label}: {planned} of {n} planned, {side.runner.dead_lettered} dead letters")
    await side.forget(ids)
    return n / seconds


@dataclass
class Trickle:
    lateness_ms: list[float]
    fired: int
    escalated: int  # invoices with one StageEscalated each (negative: the events, when one had two)
    planning_seconds: float


async def trickle_round(side: Side, n: int, window: float, plan_rate: float) -> Trickle:
    """n invoices, one stage each, due one after the other over `window` seconds from a start far
    enough ahead that planning them all (at `plan_rate`) ends first; the firing loop and the ticker
    run meanwhile. Returns each stage's lateness, and how many fired and went to the outbox."""
    loop = FiringLoop(side.pool, side.schema, policies=side.policies, name=f"scale-{side.label}")
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            await side.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)

    tasks = [asyncio.create_task(loop.run()), asyncio.create_task(ticker())]
    try:
        lead = 2.0 + 2.0 * n / max(plan_rate, 50.0)
        start = utcnow() + timedelta(seconds=lead)
        envelopes = [
            invoice_issued(tenant_id=TRICKLE, issued_at=start + timedelta(seconds=window * i / n), timezone="UTC")
            for i in range(n)
        ]
        ids = [e["subject"] for e in envelopes]
        planned_in = await side.plan(envelopes)
        if utcnow() > start:
            raise RuntimeError(f"{side.label}: planning the trickle took {planned_in:.1f} s, past its first due time")
        deadline = time.monotonic() + lead + window + 60
        while loop.fired_total < n and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        loop.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    async with side.pool.acquire() as conn:
        lateness = await conn.fetch(
            "SELECT extract(epoch FROM fired_at - scheduled_at)::float8 * 1000 AS ms FROM timers"
            " WHERE invoice_id = ANY($1) AND state = 'fired'",
            ids,
        )
        escalated = await conn.fetchrow(
            "SELECT count(*) AS events, count(DISTINCT key) AS invoices FROM outbox"
            " WHERE key = ANY($1) AND event_type = 'dunning.StageEscalated.v1'",
            ids,
        )
    await side.forget(ids)
    once = escalated["invoices"] if escalated["events"] == escalated["invoices"] else -escalated["events"]
    return Trickle([r["ms"] for r in lateness], len(lateness), once, planned_in)


async def explain(side: Side, n: int) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the planning statement (n invoices, one consumer batch) and of the
    firing statement (n stages due): auto_explain on a pool of one connection, its plans sent back as
    notices, while the real path runs."""
    plans: list[str] = []

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_buffers = on",
            "SET auto_explain.log_level = notice",
        ):
            await conn.execute(setting)

    def notice(_, message) -> None:
        plans.append(message.message)

    async def setup(conn: asyncpg.Connection) -> None:  # each acquire: a release drops the listeners
        conn.add_log_listener(notice)  # (and asyncpg warns about it first: silenced below)

    async def keep(conn: asyncpg.Connection) -> None:  # on release: no RESET ALL, the settings stay
        pass

    pool = await asyncpg.create_pool(
        side.dsn,
        min_size=1,
        max_size=1,
        init=init,
        setup=setup,
        reset=keep,
        server_settings={"search_path": side.schema, "timezone": "UTC"},
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", asyncpg.exceptions.InterfaceWarning)
            runner = runner_on(pool, handlers_for(side.policies), name=f"scale-{side.label}-explain", batch_max=n)
            due = utcnow() - timedelta(seconds=5)
            envelopes = [invoice_issued(tenant_id=TRICKLE, issued_at=due, timezone="UTC") for _ in range(n)]
            recs = records(envelopes, topic=INVOICES_TOPIC, first_offset=side.offset)
            side.offset += len(recs)
            await feed(runner, recs, n)
            await side.tick()
            await FiringLoop(pool, side.schema, policies=side.policies, batch_size=n).fire_once()
            await side.forget([e["subject"] for e in envelopes])
    finally:
        await pool.close()

    def find(needle: str) -> str:
        return next((p for p in plans if needle in p), "not captured")

    return {"planning": find("INSERT INTO timers"), "firing": find("UPDATE timers AS t SET state = 'fired'")}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Sizes:
    big: int
    small: int
    invoices: int  # InvoiceIssued per planning round
    trickle: int  # stages per firing round
    window: float  # seconds the trickle's stages are due over
    rounds: int


async def run(dsn: str, sizes: Sizes, say=print) -> tuple[dict[str, figures.Figure], dict]:
    """The whole bench on the server at `dsn`: both schemas generated, measured in alternating rounds,
    dropped. Returns the figures and the extra (sizes, generation times, each round's trickle)."""
    # The keys are fixed (make bench reads them), whatever the sizes: _10m the big side, _10k the reference.
    big_key, small_key = "10m", "10k"
    small, big = Side(small_key, sizes.small, dsn), Side(big_key, sizes.big, dsn)
    figs = {
        f"firing_lateness_p99_ms_{big_key}": figures.Figure(f"firing lateness p99, {sizes.big:,} pending", "ms"),
        f"firing_lateness_p99_ms_{small_key}": figures.Figure(f"firing lateness p99, {sizes.small:,} pending", "ms"),
        f"firing_lateness_p50_ms_{big_key}": figures.Figure(f"firing lateness p50, {sizes.big:,} pending", "ms"),
        f"firing_lateness_p50_ms_{small_key}": figures.Figure(f"firing lateness p50, {sizes.small:,} pending", "ms"),
        f"planning_per_s_{big_key}": figures.Figure(f"invoices planned, {sizes.big:,} pending", "/s"),
        f"planning_per_s_{small_key}": figures.Figure(f"invoices planned, {sizes.small:,} pending", "/s"),
        "bytes_per_timer": figures.Figure("table + index bytes per pending timer", "B"),
    }
    extra: dict = {"sizes": {}, "rounds": []}
    try:
        for side in (small, big):
            await side.open()
            say(f"{side.timers:,}: generating the pending timers by COPY ...")
            await generate(side)
            size = await side.sizes()
            extra["sizes"][side.label] = {
                **size,
                "copy_seconds": round(side.copy_seconds, 1),
                "generate_seconds": round(side.generate_seconds, 1),
                "timers_per_s_copied": round(side.generated / side.copy_seconds),
            }
            say(f"{side.timers:,}: generated in {side.generate_seconds:.0f} s, {size['bytes_per_timer']:.0f} B a timer")
        figs["bytes_per_timer"].rounds.append(extra["sizes"][big.label]["bytes_per_timer"])
        for r in range(sizes.rounds):
            for side in (small, big):
                rate = await plan_round(side, sizes.invoices)
                t = await trickle_round(side, sizes.trickle, sizes.window, rate)
                if t.fired != sizes.trickle or t.escalated != sizes.trickle:
                    raise RuntimeError(
                        f"{side.label}: {t.fired} fired, {t.escalated} escalated once, of {sizes.trickle}"
                    )
                p50, p99 = statistics.median(t.lateness_ms), _p(t.lateness_ms, 0.99)
                figs[f"planning_per_s_{side.label}"].rounds.append(round(rate, 1))
                figs[f"firing_lateness_p50_ms_{side.label}"].rounds.append(round(p50, 1))
                figs[f"firing_lateness_p99_ms_{side.label}"].rounds.append(round(p99, 1))
                extra["rounds"].append(
                    {
                        "round": r,
                        "size": side.label,
                        "planning_per_s": round(rate, 1),
                        "p50_ms": round(p50, 1),
                        "p99_ms": round(p99, 1),
                        "max_ms": round(max(t.lateness_ms), 1),
                        "fired": t.fired,
                        "escalated_once": t.escalated,
                    }
                )
                say(
                    f"round {r + 1}, {side.timers:,} pending: planning {rate:,.0f}/s,"
                    f" lateness p50 {p50:.0f} ms p99 {p99:.0f} ms"
                )
        extra["explain"] = {}
        for side in (small, big):
            extra["explain"][side.label] = await explain(side, min(sizes.trickle, 2000))
    finally:
        for side in (small, big):
            if hasattr(side, "pool"):
                await side.pool.close()
                conn = await connect(dsn, "public")
                try:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {side.schema} CASCADE")
                finally:
                    await conn.close()
    extra["config"] = {
        "timers": sizes.big,
        "reference": sizes.small,
        "planning_invoices": sizes.invoices,
        "trickle": sizes.trickle,
        "window_s": sizes.window,
        "rounds": sizes.rounds,
        "watermark_tick_s": TICK,
    }
    return figs, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000,000 against 10,000, one round, a short trickle")
    parser.add_argument("--timers", type=int, help="pending timers (default 10,000,000; --quick 1,000,000)")
    parser.add_argument("--reference", type=int, default=10_000, help="pending timers of the reference")
    parser.add_argument("--invoices", type=int, help="InvoiceIssued per planning round (3,000; --quick 1,000)")
    parser.add_argument("--trickle", type=int, help="stages per firing round (3,000; --quick 1,000)")
    parser.add_argument("--window", type=float, help="seconds the trickle is due over (45; --quick 20)")
    args = parser.parse_args()
    quick = args.quick
    sizes = Sizes(
        big=args.timers or (1_000_000 if quick else 10_000_000),
        small=args.reference,
        invoices=args.invoices or (1_000 if quick else 3_000),
        trickle=args.trickle or (1_000 if quick else 3_000),
        window=args.window or (20.0 if quick else 45.0),
        rounds=1 if quick else figures.ROUNDS,
    )
    with contextlib.redirect_stderr(open(os.devnull, "w")):
        configure_logging("scale-bench", "INFO")
    configure_tracing("scale-bench", "none")
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        with database(workdir, durable=True) as db:
            figs, extra = asyncio.run(run(db.dsn, sizes))
        path = figures.save("scale", figs, {"extra": extra})
        for key, fig in figs.items():
            print(f"{key}: {fig.text(1)}")
        print(f"saved {path}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the data directory: several GB at 10 million
        sys.stdout.flush()


if __name__ == "__main__":
    main()
