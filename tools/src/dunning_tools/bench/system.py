"""`make bench`: throughput and latency of the whole system on this machine, everything local.

Starts its own stack (embedded PostgreSQL with fsync on, Tansu, SMTP server, the four services as
processes, on free ports) and prints:
  0. the stack's CPU at rest (nothing happening; % of one core per process group, target <= 3 %)
     and each service's RSS at rest and after the load (target <= 150 MB), see bench/rest.py
  1. invoices ingested per second through POST /v1/invoices            (target >= 1,000/s)
  2. invoices ingested per second through POST /v1/invoices/bulk       (target >= 20,000/s)
     (1 and 2: two ingest replicas; the other services paused, then the time they take to catch up)
  3. payment acknowledged -> pending reminders cancelled, p50/p99      (target p99 <= 250 ms)
     on a quiet system, then under load (bench_cancel: invoices ingested, stages firing and
     reminders being delivered all the while; the load achieved is printed with it)
  4. stages escalated per second, due timer -> StageEscalated on Kafka (target >= 5,000/s)
  5. reminders delivered per second to the SMTP server
  6. the scheduler in process with issue 10's policies (`bench.policies`): planning throughput with
     segments, a DE working calendar and a send window beside the plain figure, and the firing rate
     with a window, caps and consolidation in force beside the plain firing rate
  7. bank statement lines matched per second (`bench.statements`: one CAMT.053 of 20,000 credit
     lines through reconciliation's real import against 20,000 invoices; target >= 10,000/s)
Figures go to stdout and to .run/bench.json (`make bench-quick`: a smaller run of 0-5,
.run/bench-quick.json). Nothing here is asserted: tests never assert timings.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from dunning_cli.tenants import create_tenant
from dunning_tools import loadgen
from dunning_tools.bench import rest
from dunning_tools.bench.cancel import assign_at_end, bench_cancel_under_load, report_under_load, summary
from dunning_tools.bench.measure import invoice
from dunning_tools.stack.procs import stop
from dunning_tools.stack.system import Ports, Stack

N_SINGLE = int(os.environ.get("BENCH_SINGLE", 5000))
N_BULK = int(os.environ.get("BENCH_BULK", 50000))
N_CANCEL = int(os.environ.get("BENCH_CANCEL", 300))
N_ESCALATE = int(os.environ.get("BENCH_ESCALATE", 20000))
DELIVERY_WINDOW = float(os.environ.get("BENCH_DELIVERY_SECONDS", 20))
ESCALATE_LEAD = int(os.environ.get("BENCH_ESCALATE_LEAD_SECONDS", 30))
REST_SETTLE = float(os.environ.get("BENCH_REST_SETTLE_SECONDS", 10))  # after the start, before measuring
REST_SECONDS = float(os.environ.get("BENCH_REST_SECONDS", 20))


class Watcher:
    """Consumes a topic from the start (or, `from_end`, from what is published after entering) and
    keeps what the bench asks for."""

    def __init__(self, bootstrap: str, topic: str, from_end: bool = False):
        self.topic, self.from_end = topic, from_end
        self.consumer = AIOKafkaConsumer(
            *(() if from_end else (topic,)),
            bootstrap_servers=bootstrap,
            group_id=None if from_end else f"bench-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        self.events: list[tuple[float, dict]] = []
        self._task = None

    async def __aenter__(self):
        await self.consumer.start()
        if self.from_end:
            await assign_at_end(self.consumer, self.topic)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self):
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                for r in records:
                    self.events.append((now, orjson.loads(r.value)))

    async def __aexit__(self, *exc):
        self._task.cancel()
        await self.consumer.stop()

    def of(self, event_type: str, tenant_id: str) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in self.events if e.get("type") == event_type and e.get("tenantid") == tenant_id]

    async def wait_for(self, event_type: str, tenant_id: str, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.of(event_type, tenant_id)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.of(event_type, tenant_id))}/{count} {event_type}")
            await asyncio.sleep(0.1)


async def progress(stack: Stack, stopped: tuple[str, ...] = ()) -> tuple[int, int]:
    """(rows waiting in the outboxes, events consumed so far) over the four services' schemas; the
    outboxes of `stopped` schemas (their service is down: nobody relays them) are not counted."""
    import asyncpg

    conn = await asyncpg.connect(stack.database_url)
    try:
        schemas = ("ingest", "scheduler", "notifier", "reconciliation")
        waiting = sum([await conn.fetchval(f"SELECT count(*) FROM {s}.outbox") for s in schemas if s not in stopped])
        consumed = sum([await conn.fetchval(f"SELECT count(*) FROM {s}.inbox") for s in schemas])
        return waiting, consumed
    finally:
        await conn.close()


async def wait_until_quiet(
    stack: Stack, timeout: float = 600, consumed_at_least: int = 0, stopped: tuple[str, ...] = ()
) -> float:
    """Wait until every outbox is empty and no consumer has applied anything for 1.5 s (every
    consumer caught up), and at least `consumed_at_least` events are in the inboxes (consumers
    resumed after a long pause may take seconds to rejoin their group and apply anything: that is
    not quiet); returns the seconds it took, the quiet stretch excluded."""
    start = time.perf_counter()
    last, still = None, 0
    while still < 3:
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the system did not catch up")
        waiting, consumed = await progress(stack, stopped)
        still = still + 1 if waiting == 0 and consumed == last and consumed >= consumed_at_least else 0
        last = consumed
        await asyncio.sleep(0.5)
    return time.perf_counter() - start - 1.5


def pause(stack: Stack, names: list[str], sig: int) -> None:
    for sp in stack.procs:
        if sp.name in names:
            sp.kill(sig)


async def bench_single(url: str, auth: dict, run: str) -> float:
    port = int(url.rsplit(":", 1)[1])
    headers = {**auth, "Content-Type": "application/json"}

    def requests(lo, hi):
        return [
            loadgen.build_request("POST", "/v1/invoices", orjson.dumps(invoice(run, i)), headers) for i in range(lo, hi)
        ]

    await loadgen.run(port, requests(0, 300))  # warm-up
    batch = requests(300, 300 + N_SINGLE)
    seconds, statuses, failures = await loadgen.run(port, batch, concurrency=32)
    if statuses.get(201) != N_SINGLE:
        raise SystemExit(f"single POST: unexpected answers {statuses}: {failures[:2]}")
    return N_SINGLE / seconds


async def bench_bulk(client: httpx.AsyncClient, url: str, auth: dict, run: str) -> float:
    """Nightly-sync style: batches of 10,000, two requests in flight (one per ingest replica)."""
    batches = [[invoice(run, i) for i in range(b, b + 10000)] for b in range(0, N_BULK, 10000)]
    bodies = [orjson.dumps({"invoices": items}) for items in batches]
    sem = asyncio.Semaphore(2)
    headers = {**auth, "Content-Type": "application/json"}

    async def send(body: bytes, count: int) -> None:
        async with sem:
            r = await client.post(f"{url}/v1/invoices/bulk", content=body, headers=headers, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert r.json()["summary"]["created"] == count, r.json()["summary"]

    start = time.perf_counter()
    await asyncio.gather(*(send(body, len(items)) for body, items in zip(bodies, batches, strict=True)))
    return N_BULK / (time.perf_counter() - start)


async def bench_cancel(stack: Stack, client: httpx.AsyncClient, tenant: dict, watcher: Watcher) -> None:
    """Settle invoices one by one while their stages are pending; the latencies come from the events."""
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    run = uuid.uuid4().hex[:6]
    items = [invoice(run, i) for i in range(N_CANCEL)]
    r = await client.post(f"{stack.url('invoice-ingest')}/v1/invoices/bulk", json={"invoices": items}, headers=auth)
    r.raise_for_status()
    await watcher.wait_for("dunning.DunningPlanned.v1", tenant["tenant_id"], N_CANCEL)
    await asyncio.sleep(1)
    for i, item in enumerate(items):  # ~50 payments a second, as a busy payment processor would send
        r = await client.post(
            f"{stack.url('reconciliation')}/v1/payments",
            headers=auth,
            json={
                "invoice_external_id": item["external_id"],
                "amount": item["amount_due"],
                "currency": item["currency"],
                "received_at": datetime.utcnow().isoformat() + "Z",
                "reference": f"PAY-{run}-{i}",
            },
        )
        assert r.status_code == 201, r.text
        await asyncio.sleep(0.02)
    await watcher.wait_for("dunning.StagesCancelled.v1", tenant["tenant_id"], N_CANCEL, timeout=60)


def cancel_latencies(payments: Watcher, stages: Watcher, tenant_id: str) -> list[float]:
    acked = {
        e["data"]["invoice_id"]: datetime.fromisoformat(e["data"]["acknowledged_at"])
        for _, e in payments.of("dunning.PaymentReceived.v1", tenant_id)
    }
    out = []
    for _, e in stages.of("dunning.StagesCancelled.v1", tenant_id):
        inv = e["data"]["invoice_id"]
        if inv in acked:
            out.append((datetime.fromisoformat(e["data"]["cancelled_at"]) - acked[inv]).total_seconds() * 1000)
    return out


async def main_async(stack: Stack) -> dict:
    results: dict = {}
    # 0. The stack's own cost with nothing to do: started, settled, then measured (rest.py).
    await asyncio.sleep(REST_SETTLE)
    results["at_rest"] = await asyncio.to_thread(rest.cpu_at_rest, REST_SECONDS)
    print(rest.report_at_rest(results["at_rest"]), flush=True)
    results["rss_mb_at_rest"] = rest.rss_by_service()
    print(rest.report_rss("at rest", results["rss_mb_at_rest"]), flush=True)
    tenant = await create_tenant(stack.database_url, "Bench Ltd")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    ingest = stack.url("invoice-ingest")
    downstream = ["scheduler", "notifier", "reconciliation"]
    # 1-2. The ingest API's own capacity: the downstream services are paused (SIGSTOP) while it is
    # measured; Kafka holds what they have to do, and they catch up afterwards (3).
    _, consumed_before = await progress(stack)
    pause(stack, downstream, signal.SIGSTOP)
    try:
        results["single_post_invoices_per_s"] = round(await bench_single(ingest, auth, uuid.uuid4().hex[:6]))
        print(
            f"POST /v1/invoices          {results['single_post_invoices_per_s']:>8} invoices/s  (target >= 1,000)",
            flush=True,
        )
        async with httpx.AsyncClient(timeout=120) as client:
            results["bulk_invoices_per_s"] = round(await bench_bulk(client, ingest, auth, uuid.uuid4().hex[:6]))
        print(
            f"POST /v1/invoices/bulk     {results['bulk_invoices_per_s']:>8} invoices/s  (target >= 20,000)", flush=True
        )
    finally:
        pause(stack, downstream, signal.SIGCONT)
    total = N_SINGLE + 300 + N_BULK
    # Each invoice is one inbox row at least in scheduler and reconciliation (InvoiceIssued) and in
    # invoice-ingest (DunningPlanned).
    seconds = await wait_until_quiet(stack, consumed_at_least=consumed_before + 3 * total)
    results["downstream_catch_up_invoices_per_s"] = round(total / seconds)
    print(
        f"downstream catch-up        {results['downstream_catch_up_invoices_per_s']:>8} invoices/s  "
        f"({total} invoices planned, stored and put on the timeline by the other services in {seconds:.1f} s)",
        flush=True,
    )

    # 3. Payment acknowledged -> pending reminders cancelled, on a quiet system.
    async with httpx.AsyncClient(timeout=60) as client:
        tenant2 = await create_tenant(stack.database_url, "Bench Cancel Ltd")
        async with (
            Watcher(stack.kafka_bootstrap_servers, "dunning.stages.v1") as stages,
            Watcher(stack.kafka_bootstrap_servers, "dunning.payments.v1") as payments,
        ):
            await bench_cancel(stack, client, tenant2, stages)
            await payments.wait_for("dunning.PaymentReceived.v1", tenant2["tenant_id"], N_CANCEL)
            lat = cancel_latencies(payments, stages, tenant2["tenant_id"])
        results["cancel_latency_ms"] = summary(lat)
        c = results["cancel_latency_ms"]
        print(
            f"payment ack -> cancelled   p50 {c['p50']} ms, p99 {c['p99']} ms, max {c['max']} ms over {c['n']}"
            " (target p99 <= 250 ms)",
            flush=True,
        )
        await wait_until_quiet(stack)
        # 3b. The same, while invoices are ingested, stages fire and reminders are delivered.
        under_load = await bench_cancel_under_load(stack, client)
        results.update(under_load)
        report_under_load(under_load)
        await wait_until_quiet(stack)
        results.update(await bench_escalate_and_deliver(stack, client))
    results["rss_mb_after_load"] = rest.rss_by_service()
    print(rest.report_rss("after", results["rss_mb_after_load"]), flush=True)
    return results


async def bench_escalate_and_deliver(stack: Stack, client: httpx.AsyncClient) -> dict:
    tenant = await create_tenant(stack.database_url, "Bench Escalation Ltd")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    out: dict[str, int | float | None] = {}
    lead = ESCALATE_LEAD  # the import must be planned within it (see the early firings below)
    r = await client.put(
        f"{stack.url('scheduler')}/v1/policy",
        headers=auth,
        json={"anchor": "issued_at", "stages": [{"name": "soft", "offset": f"PT{lead}S"}]},
    )
    r.raise_for_status()
    notifier = [sp for sp in stack.procs if sp.name == "notifier"]
    scheduler = [sp for sp in stack.procs if sp.name == "scheduler"]
    for sp in notifier:  # deliveries are measured separately, after the escalation
        stop(sp.proc)
    async with Watcher(stack.kafka_bootstrap_servers, "dunning.stages.v1", from_end=True) as stages:
        run = uuid.uuid4().hex[:6]
        issued = time.time()
        for b in range(0, N_ESCALATE, 10000):
            items = [invoice(run, i) for i in range(b, min(b + 10000, N_ESCALATE))]
            (
                await client.post(
                    f"{stack.url('invoice-ingest')}/v1/invoices/bulk",
                    json={"invoices": items},
                    headers=auth,
                    timeout=120,
                )
            ).raise_for_status()
        await stages.wait_for("dunning.DunningPlanned.v1", tenant["tenant_id"], N_ESCALATE, timeout=300)
        for sp in scheduler:  # hold the timers until they are all due, then measure the backlog drain
            stop(sp.proc)
        # The other consumers done with the import: measure firing alone. (The scheduler's outbox is
        # not waited for: with the scheduler down nobody relays it; see the early firings below.)
        await wait_until_quiet(stack, stopped=("scheduler",))
        await asyncio.sleep(max(0.0, issued + lead + 2 - time.time()))
        # On a slow or busy machine the import and its planning may outlast the lead: the first
        # timers then fire before the scheduler is stopped, and are not part of the measured drain
        # (BENCH_ESCALATE_LEAD_SECONDS gives them more time).
        early = len(stages.of("dunning.StageEscalated.v1", tenant["tenant_id"]))
        restarted = time.time()
        for sp in scheduler:
            sp.start()
        await stages.wait_for("dunning.StageEscalated.v1", tenant["tenant_id"], N_ESCALATE, timeout=300)
        times = [t for t, _ in stages.of("dunning.StageEscalated.v1", tenant["tenant_id"]) if t >= restarted]
        note = (
            f" ({early} fired before the scheduler was stopped: the import took longer than the {lead} s lead)"
            if early
            else ""
        )
        if early:
            out["escalated_before_the_drain"] = early
        if early > N_ESCALATE // 2 or len(times) < 2 or max(times) - min(times) < 0.2:
            out["escalated_stages_per_s"] = None  # too few left to drain: no figure rather than a wrong one
            print(f"due timer -> StageEscalated  not measured: {len(times)} stages left to drain{note}", flush=True)
        else:
            out["escalated_stages_per_s"] = round((len(times) - 1) / (max(times) - min(times)))
            print(
                f"due timer -> StageEscalated {out['escalated_stages_per_s']:>7} stages/s    (target >= 5,000)"
                f" over {len(times)} stages{note}",
                flush=True,
            )
    maildir = stack.workdir / "mail" / "new"
    before = set(os.listdir(maildir)) if maildir.exists() else set()
    for sp in notifier:
        sp.start()
    await asyncio.sleep(DELIVERY_WINDOW)
    stamps = sorted(os.stat(maildir / f).st_mtime for f in set(os.listdir(maildir)) - before)
    if len(stamps) > 1:
        out["reminders_delivered_per_s"] = round((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        print(
            f"reminders -> SMTP server   {out['reminders_delivered_per_s']:>8} mails/s  over {len(stamps)} mails",
            flush=True,
        )
    return out


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dunning-bench-"))
    # Two ingest replicas share the port (SO_REUSEPORT), as two pods behind a Service would.
    stack = Stack(workdir, Ports.free(), durable=True, replicas={"invoice-ingest": 2})
    print(f"starting the stack in {workdir} ...", flush=True)
    try:
        stack.start_infrastructure()
        stack.start_services()
        results = asyncio.run(main_async(stack))
    finally:
        stack.stop()
    if "--quick" in sys.argv[1:]:  # make bench-quick: the whole-stack phases only, smaller (Makefile)
        _save(results, ".run/bench-quick.json")
        return
    print("\nthe scheduler with policies in force (python -m dunning_tools.bench.policies) ...", flush=True)
    policies = subprocess.run(
        [sys.executable, "-m", "dunning_tools.bench.policies"], capture_output=True, text=True, check=False
    )
    print(policies.stdout + (policies.stderr[-2000:] if policies.returncode else ""), flush=True)
    results["policies"] = policies.stdout.splitlines()
    print("\nbank statement lines matched (python -m dunning_tools.bench.statements) ...", flush=True)
    statements = subprocess.run(
        [sys.executable, "-m", "dunning_tools.bench.statements"], capture_output=True, text=True, check=False
    )
    print(statements.stdout + (statements.stderr[-2000:] if statements.returncode else ""), flush=True)
    results["statements"] = statements.stdout.splitlines()
    _save(results, ".run/bench.json")


def _save(results: dict, path: str) -> None:
    Path(path).parent.mkdir(exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
