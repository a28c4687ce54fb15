"""The platform as the third contender: the same reminders planned, stopped, fired and recorded by
its own path (docs/bench-peers.md says why that is the same work as the job queues').

- scheduling: InvoiceIssued envelopes through the scheduler's consumer path
  (`ConsumerRunner.process_batch`: decode, inbox, the planning batch handler, one transaction), one
  record per call for the single enqueues and one consumer batch for the batch calls; the tenant's
  policy has one stage, `reminder_1`, PT2S after `issued_at`, and each invoice is issued 2 s before
  its job would be due, so its timer falls due at the job's offset;
- cancelling: settling PaymentReceived events through the same runner (the scheduler's stop:
  invoice settled, pending timers cancelled, StagesCancelled), one per call, then in batches;
- executing: worker 0 (and every even one) runs the scheduler's FiringLoop with its gate on and the
  outbox relay to the broker, plus reconciliation's and ingest's watermark statements every 0.25 s
  applied through the scheduler's handlers (as the service gets them); worker 1 (every odd one) is
  the notifier's place: a ConsumerRunner on the stages topic whose StageEscalated handler writes
  the peers' `sent` upsert (per event, and a batch variant of the same statement), in the consumer's
  transaction with its inbox.

The broker's bootstrap servers come from PEERS_KAFKA (the harness's workers inherit it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import orjson

from common import STAGE
from dunning import tenancy
from dunning.clock import utcnow
from dunning.consumer import ConsumerRunner
from dunning.contracts import InvoiceIssued, PaymentReceived, PaymentsWatermark, StageEscalated, StopsWatermark, topic
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import Event, new_event
from dunning.handler_table import HandlerSpec
from dunning.kafka import ensure_topics, make_producer
from dunning.logging import configure_logging
from dunning.outbox import OutboxRelay
from dunning.tracing import configure_tracing
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import ActivePolicies, save_policy
from dunning_tools.testing.events import payment_received
from dunning_tools.testing.runner import feed, records, runner_on

NAME = "dunning"
VERSION = importlib.metadata.version("dunning-scheduler")
SCHEDULER = "scheduler"  # the schemas of the two services, in the contender's own database
NOTIFIER = "notifier"
TENANT = "ten_peers"
LEAD_S = 2.0  # the stage's offset after issued_at
POLICY = {"id": "pol_peers", "anchor": "issued_at", "stages": [{"name": STAGE, "offset": f"PT{LEAD_S:.0f}S"}]}
INVOICES_TOPIC = topic(InvoiceIssued)
PAYMENTS_TOPIC = topic(PaymentReceived)
TICK_S = 0.25  # reconciliation's default watermark interval
CONSUMER_BATCH = 500  # the services' consumer_batch_max

# The peers' handler statement (common.UPSERT_ASYNCPG) on the harness's table in `public`, and its
# batch form: the same upsert over the batch's rows, one statement.
UPSERT = (
    "INSERT INTO public.sent (invoice_id, stage) VALUES ($1, $2) "
    "ON CONFLICT (invoice_id, stage) DO UPDATE SET deliveries = sent.deliveries + 1"
)
UPSERT_MANY = (
    "INSERT INTO public.sent (invoice_id, stage) SELECT * FROM unnest($1::bigint[], $2::text[]) "
    "ON CONFLICT (invoice_id, stage) DO UPDATE SET deliveries = sent.deliveries + 1"
)
# The client's word to the workers (the offsets the statements name, the run's consumer group), and
# each worker's: ready (the notifier's consumer in place), when firing started, its CPU.
_RUN_TABLES = """
CREATE TABLE IF NOT EXISTS public.dunning_run (invoices bigint NOT NULL, payments bigint NOT NULL, run text NOT NULL);
CREATE TABLE IF NOT EXISTS public.dunning_worker (
    worker int PRIMARY KEY, role text NOT NULL, ready_at timestamptz, firing_at timestamptz, cpu_s float8,
    timings jsonb)
"""


def kafka() -> str:
    bootstrap = os.environ.get("PEERS_KAFKA")
    if not bootstrap:
        raise SystemExit("dunning: set PEERS_KAFKA to the broker's bootstrap servers")
    return bootstrap


def external_id(invoice: int) -> str:
    return str(invoice)


async def record_sent(conn: asyncpg.Connection, event: Event[StageEscalated]) -> None:
    """The fired stage's delivery recorded: the peers' upsert, keyed by the invoice's own number (a
    stage of another tenant, on a broker shared with tests, is none of this bench's)."""
    if event.data.tenant_id == TENANT:
        await conn.execute(UPSERT, int(event.data.invoice.external_id), event.data.stage)


async def record_sent_many(conn: asyncpg.Connection, events: list[Event[StageEscalated]]) -> None:
    """Mirrors record_sent for a run of events: the same upsert, one statement."""
    ours = [e.data for e in events if e.data.tenant_id == TENANT]
    if ours:
        await conn.execute(UPSERT_MANY, [int(s.invoice.external_id) for s in ours], [s.stage for s in ours])


DELIVERY_HANDLERS = {StageEscalated: HandlerSpec(record_sent, batch=record_sent_many)}


def issued(invoice: int, offset_s: float) -> dict:
    """InvoiceIssued of invoice `invoice`, its stage due `offset_s` from now."""
    at = utcnow() + timedelta(seconds=offset_s - LEAD_S)
    return new_event(
        InvoiceIssued.TYPE,
        {
            "invoice_id": f"inv_peers{invoice:012d}",
            "tenant_id": TENANT,
            "external_id": external_id(invoice),
            "number": f"INV-{invoice:08d}",
            "customer": {
                "customer_id": f"cus_01JB2F7H9K3M5N7P9Q{invoice % 1000:08d}",
                "external_id": f"c-{invoice % 1000}",
                "name": "Brandt & Söhne GmbH",
                "email": "ap@brandt-soehne.example",
                "locale": "de-DE",
                "timezone": "Europe/Berlin",
            },
            "currency": "EUR",
            "amount_due": "1250.00",
            "issue_date": at.date(),
            "due_date": (at + timedelta(days=14)).date(),
            "payment_url": f"https://pay.example.com/i/{invoice}",
            "metadata": {},
            "issued_at": at,
        },
        source=InvoiceIssued.SOURCE,
        subject=f"inv_peers{invoice:012d}",
        tenant_id=TENANT,
    )


class Peer:
    name = NAME
    version = VERSION
    batch_enqueue_api = "InvoiceIssued x batch -> ConsumerRunner.process_batch (planning batch handler)"
    single_enqueue_api = "InvoiceIssued -> ConsumerRunner.process_batch"
    batch_cancel_api: str | None = "PaymentReceived (settling) x batch -> ConsumerRunner.process_batch"
    single_cancel_api = "PaymentReceived (settling) -> ConsumerRunner.process_batch"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None
        self.invoices = 0  # next offset on the invoices topic (partition 0), and on the payments topic
        self.payments = 0
        self.relay: OutboxRelay | None = None
        self.tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        _quiet("peers-dunning-client")
        self.pool = await create_pool(self.dsn, SCHEDULER, min_size=1, max_size=4)

    async def install(self) -> None:
        """The two services' schemas, the tenant and its policy; the relay starts publishing (as the
        scheduler's does while it plans), so the planning's events leave as they are written."""
        assert self.pool is not None
        await asyncio.to_thread(migrate, self.dsn, SCHEDULER, migrations_of("dunning_scheduler"))
        await asyncio.to_thread(migrate, self.dsn, NOTIFIER, migrations_of("dunning_notifier"))
        async with self.pool.acquire() as conn:
            await tenancy.provision(conn, TENANT, "Peers", f"dk_peers_{uuid.uuid4().hex}")
            await save_policy(conn, TENANT, parse_policy(POLICY))
            await conn.execute(_RUN_TABLES)
        await ensure_topics(kafka())
        self.runner = runner_on(
            self.pool, handlers_for(ActivePolicies()), name="scheduler", handler_attempts=3, track_positions=True
        )
        self.producer = make_producer(kafka(), "peers-scheduler-client")
        await self.producer.start()
        self.relay = OutboxRelay(self.pool, self.producer, SCHEDULER, batch_size=2000, poll_seconds=0.05)
        self.tasks.append(asyncio.create_task(self.relay.run()))

    async def close(self) -> None:
        """The planning's and the stops' events published (the relay drains the outbox), the gate's
        offsets kept for the workers' statements, then everything closed."""
        if self.pool is None:
            return
        try:
            if self.relay is not None:
                while await self.pool.fetchval("SELECT count(*) FROM outbox"):
                    await asyncio.sleep(0.05)
                async with self.pool.acquire() as conn:
                    await conn.execute("DELETE FROM public.dunning_run")
                    await conn.execute(
                        "INSERT INTO public.dunning_run VALUES ($1, $2, $3)",
                        self.invoices,
                        self.payments,
                        uuid.uuid4().hex[:12],
                    )
                self.relay.stop()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                await self.producer.stop()
        finally:
            await self.pool.close()
            self.pool = None

    async def _plan(self, envelopes: list[dict]) -> list[str]:
        recs = records(envelopes, topic=INVOICES_TOPIC, first_offset=self.invoices)
        self.invoices += len(recs)
        await feed(self.runner, recs, CONSUMER_BATCH)
        return [e["subject"] for e in envelopes]

    async def enqueue_one(self, invoice_id: int, offset_s: float) -> str:
        (stage_of,) = await self._plan([issued(invoice_id, offset_s)])
        return stage_of

    async def enqueue_many(self, invoice_ids: list[int], offset_s: float) -> list[str]:
        return await self._plan([issued(i, offset_s) for i in invoice_ids])

    async def _pay(self, invoice_ids: list[str]) -> None:
        envelopes = [
            payment_received(i, tenant_id=TENANT, balance="0.00", settled=True, amount="1250.00") for i in invoice_ids
        ]
        recs = records(envelopes, topic=PAYMENTS_TOPIC, first_offset=self.payments)
        self.payments += len(recs)
        await feed(self.runner, recs, CONSUMER_BATCH)

    async def cancel_one(self, job_id: str) -> None:
        await self._pay([job_id])

    async def cancel_many(self, job_ids: list[str]) -> None:
        await self._pay(job_ids)

    async def runnable_jobs(self) -> int:
        assert self.pool is not None
        return await self.pool.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'")

    async def job_states(self) -> dict[str, int]:
        assert self.pool is not None
        states: dict[str, int] = {}
        for r in await self.pool.fetch("SELECT state, count(*) AS n FROM timers GROUP BY 1 ORDER BY 1"):
            states[f"timers:{r['state']}"] = r["n"]
        states["notifier_inbox"] = await self.pool.fetchval(f"SELECT count(*) FROM {NOTIFIER}.inbox")
        for r in await self.pool.fetch("SELECT worker, role, cpu_s, timings FROM public.dunning_worker ORDER BY 1"):
            states[f"cpu_ms:{r['worker']}:{r['role']}"] = round((r["cpu_s"] or 0) * 1000)
            timings = r["timings"] or {}  # the pool decodes jsonb
            for step, (calls, seconds) in (orjson.loads(timings) if isinstance(timings, str) else timings).items():
                states[f"wall_ms:{r['worker']}:{step}"] = round(seconds * 1000)
                states[f"calls:{r['worker']}:{step}"] = int(calls)
        # The same span measured from the moment the firing loop started (the first stage's way through
        # the firing, the relay and the broker counted too): executed / (last sent_at - firing start).
        span = await self.pool.fetchval(
            "SELECT extract(epoch FROM (SELECT max(sent_at) FROM public.sent)"
            " - (SELECT min(firing_at) FROM public.dunning_worker))"
        )
        executed = await self.pool.fetchval("SELECT count(*) FROM public.sent")
        states["fire_to_last_per_s"] = round(executed / float(span)) if span else 0
        # Where the time went: the last batch fired and the last delivery recorded, ms after the start.
        for key, sql in (
            ("last_fired_ms", "SELECT max(fired_at) FROM timers"),
            ("last_sent_ms", "SELECT max(sent_at) FROM public.sent"),
        ):
            states[key] = await self.pool.fetchval(
                f"SELECT round(extract(epoch FROM ({sql}) - (SELECT min(firing_at) FROM public.dunning_worker))"
                " * 1000)::int"
            )
        return states


_configured: list[str] = []


def _quiet(service: str) -> None:
    """Logs as the services render them, at INFO: a worker's to its stdout (the harness's log file),
    the client's to PEERS_CLIENT_LOG (else nowhere); once a process."""
    if _configured:
        return
    _configured.append(service)
    stream: TextIO = sys.stdout
    if service.endswith("client"):
        stream = open(os.environ.get("PEERS_CLIENT_LOG") or os.devnull, "a")  # the process's, never closed
    configure_logging(service, "INFO", stream=stream)
    configure_tracing(service, "none")


async def _watermarks(pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Reconciliation's and ingest's statements every TICK_S, applied by the scheduler's handlers:
    every payment and every invoice the client published is below the offsets they state."""
    gate = await pool.fetchrow("SELECT invoices, payments FROM public.dunning_run")
    ticker = runner_on(pool, handlers_for(ActivePolicies()), name="scheduler-watermarks")
    offset = 0
    while not stop.is_set():
        now = utcnow()
        payments = {
            "watermark": now,
            "payments_topic": PAYMENTS_TOPIC,
            "payments_offsets": {"0": gate["payments"]},
            "invoices_topic": INVOICES_TOPIC,
            "invoice_positions": {"0": gate["invoices"]},
            "computed_at": now,
        }
        stops = {"service": "invoice-ingest", "watermark": now, "offsets": {INVOICES_TOPIC: {"0": gate["invoices"]}}}
        envelopes = [
            new_event(
                PaymentsWatermark.TYPE,
                payments,
                source=PaymentsWatermark.SOURCE,
                subject=PaymentsWatermark.SUBJECT,
                tenant_id="_system",
            ),
            new_event(
                StopsWatermark.TYPE,
                {**stops, "computed_at": now},
                source=StopsWatermark.SOURCE,
                subject="_invoice-ingest",
                tenant_id="_system",
            ),
        ]
        await feed(ticker, records(envelopes, topic=topic(PaymentsWatermark), first_offset=offset), 2)
        offset += 2
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TICK_S)


async def _scheduler(pool: asyncpg.Pool, index: int, fire_batch: int, consumers: int, stop: asyncio.Event) -> None:
    """The scheduler's firing side: waits for the notifier's consumers to be in place, then fires."""
    producer = make_producer(kafka(), "peers-scheduler")
    await producer.start()
    try:
        ready = "SELECT count(*) FROM public.dunning_worker WHERE role = 'notifier' AND ready_at IS NOT NULL"
        while await pool.fetchval(ready) < consumers:
            if stop.is_set():
                return
            await asyncio.sleep(0.05)
        await pool.execute("UPDATE public.dunning_worker SET firing_at = clock_timestamp() WHERE worker = $1", index)
        firing = FiringLoop(pool, SCHEDULER, batch_size=fire_batch)
        relay = OutboxRelay(pool, producer, SCHEDULER, batch_size=2000, poll_seconds=0.05)
        _timed(firing, "fire_once")
        _timed(relay, "publish_once")
        tasks = [asyncio.create_task(w.run()) for w in (firing, relay)]
        tasks.append(asyncio.create_task(_watermarks(pool, stop)))
        await stop.wait()
        firing.stop()
        relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await producer.stop()


class _NewGroup(ConsumerRunner):
    """The notifier's consumer, as a group that starts where the stages topic ends when it joins:
    the planning's and the stops' events were consumed long before (the service runs all along)."""

    def make_consumer(self):
        consumer = super().make_consumer()
        consumer._auto_offset_reset = "latest"  # the group has no committed offset yet
        return consumer


async def _notifier(pool: asyncpg.Pool, index: int, batch: int, stop: asyncio.Event) -> None:
    """The notifier's place: StageEscalated -> the `sent` upsert, in the consumer's transaction."""
    run = await pool.fetchval("SELECT run FROM public.dunning_run")
    runner = _NewGroup(
        name="notifier",
        pool=pool,
        bootstrap_servers=kafka(),
        group_id=f"notifier-peers-{run}",
        handlers=DELIVERY_HANDLERS,
        topics=[topic(StageEscalated)],
        batch_max=batch,
    )
    _timed(runner, "process_batch")
    task = asyncio.create_task(runner.run())
    try:
        while runner.consumer is None or not runner.consumer.assignment():
            if task.done() or stop.is_set():
                return
            await asyncio.sleep(0.05)
        for tp in runner.consumer.assignment():
            await runner.consumer.position(tp)  # resolved now: nothing published from here on is skipped
        await pool.execute("UPDATE public.dunning_worker SET ready_at = clock_timestamp() WHERE worker = $1", index)
        await stop.wait()
    finally:
        runner.stop()
        await asyncio.gather(task, return_exceptions=True)


async def run_worker(dsn: str, index: int, workers: int, fire_batch: int, consumer_batch: int) -> None:
    """Worker `index`: the scheduler's firing side if even, the notifier's consumer if odd, until SIGTERM;
    its CPU from the moment it is set up is kept in public.dunning_worker."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    role = SCHEDULER if index % 2 == 0 else NOTIFIER
    pool = await create_pool(dsn, role, min_size=2, max_size=6)
    await pool.execute(
        "INSERT INTO public.dunning_worker (worker, role) VALUES ($1, $2)"
        " ON CONFLICT (worker) DO UPDATE SET role = $2, ready_at = NULL, firing_at = NULL, cpu_s = NULL",
        index,
        role,
    )
    cpu = time.process_time()
    profiler = _profile(index, role)
    try:
        if role == SCHEDULER:
            await _scheduler(pool, index, fire_batch, max(1, workers // 2), stop)
        else:
            await _notifier(pool, index, consumer_batch, stop)
        cpu = time.process_time() - cpu
        await pool.execute(
            "UPDATE public.dunning_worker SET cpu_s = $2, timings = $3::text::jsonb WHERE worker = $1",
            index,
            cpu,
            orjson.dumps(TIMINGS).decode(),
        )
        print(f"dunning worker {index} ({role}) stopped; {cpu:.2f} s CPU", flush=True)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
            profiler.wait(timeout=20)
        await pool.close()


TIMINGS: dict[str, list[float]] = {}  # step -> [calls that did work, wall seconds they took]


def _timed(worker: object, method: str) -> None:
    """Count the wall time of `worker.method` calls that did something (a step that found nothing is
    the loop waiting): where the execute phase's time goes, beside the process's CPU."""
    inner = getattr(worker, method)

    async def timed(*args, **kwargs):
        start = time.perf_counter()
        result = await inner(*args, **kwargs)
        if result or method == "process_batch":
            entry = TIMINGS.setdefault(method, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start
        return result

    setattr(worker, method, timed)


def _profile(index: int, role: str) -> subprocess.Popen | None:
    """py-spy on this process (PEERS_PROFILE_DIR set): folded stacks, to read where the time goes."""
    folder = os.environ.get("PEERS_PROFILE_DIR")
    spy = Path(sys.executable).with_name("py-spy")
    if not folder or not spy.exists():
        return None
    out = Path(folder) / f"dunning-{role}-{index}-{os.getpid()}.txt"
    cmd = [str(spy), "record", "--pid", str(os.getpid()), "--rate", "200", "--format", "raw", "-o", str(out)]
    return subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def worker_main(args: Any) -> None:
    _quiet(f"peers-dunning-{args.worker_index}")
    import uvloop  # the services' event loop (dunning.runtime)

    uvloop.run(
        run_worker(
            args.dsn,
            args.worker_index,
            args.workers,
            fire_batch=args.pgq_batch,
            consumer_batch=args.concurrency,
        )
    )
