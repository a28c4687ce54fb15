"""`make bench`, figure 3b: payment acknowledged -> pending reminders cancelled, UNDER LOAD.

The quiet-system figure (bench.bench_cancel) says how fast a cancellation can be; this one says how
fast it is while the system is busy with everything else it does:

- background load, for one tenant ("Bench Load Ltd", policy: one email stage PT{LEAD}S after
  issue): invoices ingested at a steady rate through POST /v1/invoices/bulk (batches of 100) and
  POST /v1/invoices (one at a time); each of them is planned, its stage comes due LEAD seconds
  later, fires (StageEscalated, behind reconciliation's payments watermark) and is emailed to the
  SMTP server: so ingest, planning, firing, delivery and the timelines all run at once;
- once that pipeline is flowing (LEAD + RAMP seconds), a few hundred payments are sent through
  reconciliation's POST /v1/payments (open loop: each at its own instant, whatever the previous
  answers' latency), for invoices of another tenant created beforehand, whose stages (default
  policy, due in 30 days) are all still scheduled;
- the ingest keeps running until the scheduler has cancelled the timers of every paid invoice.

Latency per payment, as the quiet figure measures it: the payment's `acknowledged_at` (answered by
the API, the clock read in the acknowledging transaction) -> the StagesCancelled event's
`cancelled_at` (the scheduler's transaction that cancelled the timers). Also, on the client's side:
the 2xx answer (client wall clock) -> the StagesCancelled record on Kafka (its timestamp, set when
the scheduler's relay published it), i.e. including the outbox relay.

Also split: acknowledged_at -> PaymentReceived on Kafka (reconciliation: commit, outbox relay) and
-> cancelled_at (the scheduler's consumer); and the client's send -> acknowledged_at (how long the
payment waited in reconciliation before its transaction read the clock).

Nothing is consumed by the bench while the window runs (the bench shares the 2 cores): the events
are read from Kafka afterwards, from offsets taken before. The background load actually achieved in
the window is measured, not assumed: invoices accepted by the API per second (client side),
StageEscalated per second (by `fired_at`), mails stored by the SMTP server per second (file times),
and the CPU the stack's processes used.

Knobs (environment): BENCH_LOAD_BULK_RATE (50 invoices/s) and BENCH_LOAD_SINGLE_RATE (10/s). Every
one of them is planned, reconciled, fired, rendered, mailed and put on the timeline, which costs the
stack ~15 ms of CPU: on 2 cores it keeps up with about 100 invoices/s (then the deliveries fall
behind and every latency grows with the length of the window), so the default is some 60-70 % of
that, a load it sustains. BENCH_LOAD_CANCEL (300 payments) at BENCH_LOAD_PAYMENT_RATE (25/s);
BENCH_LOAD_LEAD_SECONDS (5).
"""

import asyncio
import contextlib
import os
import resource
import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from dunning_cli.tenants import create_tenant
from dunning_tools.bench.measure import invoice

N_PAYMENTS = int(os.environ.get("BENCH_LOAD_CANCEL", 300))
PAYMENT_RATE = float(os.environ.get("BENCH_LOAD_PAYMENT_RATE", 25))  # payments/s
BULK_RATE = float(os.environ.get("BENCH_LOAD_BULK_RATE", 50))  # invoices/s through /v1/invoices/bulk
SINGLE_RATE = float(os.environ.get("BENCH_LOAD_SINGLE_RATE", 10))  # invoices/s through /v1/invoices
BULK_BATCH = 100
LEAD = int(os.environ.get("BENCH_LOAD_LEAD_SECONDS", 5))  # issue -> stage due, for the load tenant
RAMP = 3.0  # seconds after the first stages come due before the payments start
STAGES_TOPIC = "dunning.stages.v1"
PAYMENTS_TOPIC = "dunning.payments.v1"


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)

    return {"n": len(values), "p50": round(statistics.median(values), 1), "p99": at(0.99), "max": round(ordered[-1], 1)}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- Kafka, read afterwards -------------------------------------------------------------------------
async def assign_at_end(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` to a started, group-less consumer, positioned at the end
    offsets of now (settled before returning: nothing published afterwards is missed)."""
    partitions = None
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            break
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    if not partitions:
        raise RuntimeError(f"no partitions known for {topic}")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    for tp, offset in (await consumer.end_offsets(tps)).items():
        consumer.seek(tp, offset)
    return tps


class TopicTail:
    """A topic read from the offsets it had when `start` was called, on demand (no group, no commit)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=8 << 20,
        )
        self.records: list[tuple[int, dict]] = []  # (record timestamp in ms, event)
        self.tps: list[TopicPartition] = []

    async def start(self) -> None:
        await self.consumer.start()
        self.tps = await assign_at_end(self.consumer, self.topic)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def catch_up(self, keep) -> None:
        """Read up to the topic's end offsets as of now; `keep(event)` chooses what is kept."""
        ends = await self.consumer.end_offsets(self.tps)
        while True:
            behind = [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]
            if not behind:
                return
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20000)
            for records in batch.values():
                for r in records:
                    event = orjson.loads(r.value)
                    if keep(event):
                        self.records.append((r.timestamp, event))

    def of(self, event_type: str, tenant_id: str) -> list[tuple[int, dict]]:
        return [(t, e) for t, e in self.records if e.get("type") == event_type and e.get("tenantid") == tenant_id]


# -- CPU -------------------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_sample(roots: dict[int, str]) -> tuple[float, dict[str, float], float]:
    """(wall time, CPU seconds per name of the processes under each root pid (its descendants, or
    its session: PostgreSQL's backends start sessions of their own), machine busy seconds over all
    cores). The CPU of processes that exited is not counted."""
    procs: dict[int, tuple[int, int, int]] = {}  # pid -> (parent, session, clock ticks)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields 4 (ppid), 6 (session), 14 (utime), 15 (stime) of proc(5)
        procs[int(pid)] = (int(rest[1]), int(rest[3]), int(rest[11]) + int(rest[12]))
    used = dict.fromkeys(roots.values(), 0)
    for proc, (_parent, session, ticks) in procs.items():
        name, hops = roots.get(session), 0
        while name is None and proc > 1 and hops < 20:
            name = roots.get(proc)
            proc, hops = procs.get(proc, (0,))[0], hops + 1
        if name is not None:
            used[name] += ticks
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait (guest is in user)
    return time.time(), {n: u / _TICK for n, u in used.items()}, busy / _TICK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stack_roots(stack) -> dict[int, str]:
    """Pid -> name of each process the stack started (each in a session of its own)."""
    procs = [(sp.proc, sp.name) for sp in stack.procs] + [
        (stack.mail, "smtp"),
        (getattr(stack.pg, "proc", None), "postgres"),
        (getattr(stack.broker, "proc", None), "kafka"),
    ]
    return {p.pid: name for p, name in procs if p is not None}


class LoopLag:
    """How late the bench's own event loop wakes up (a busy client inflates what it measures)."""

    def __init__(self, period: float = 0.01):
        self.period = period
        self.lags: list[float] = []
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append((time.perf_counter() - t - self.period) * 1000)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None, "not started"
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


# -- background ingest -----------------------------------------------------------------------------
class Ingest:
    """Invoices for the load tenant at steady rates, bulk and single; answers are recorded as
    (client time of the answer, invoices accepted, 'bulk' | 'single')."""

    def __init__(self, client: httpx.AsyncClient, url: str, auth: dict):
        self.client = client
        self.url = url
        self.headers = {**auth, "Content-Type": "application/json"}
        self.run = uuid.uuid4().hex[:6]
        self.next = 0
        self.accepted: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task] = set()

    def _items(self, count: int) -> list[dict]:
        lo, self.next = self.next, self.next + count
        return [invoice(self.run, i, prefix="L") for i in range(lo, lo + count)]

    async def _post(self, path: str, body: bytes, count: int, kind: str, sem: asyncio.Semaphore) -> None:
        try:
            r = await self.client.post(f"{self.url}{path}", content=body, headers=self.headers, timeout=120)
            if r.status_code == 201 and kind == "single":
                self.accepted.append((time.time(), 1, kind))
            elif r.status_code == 200 and kind == "bulk":
                self.accepted.append((time.time(), r.json()["summary"]["created"], kind))
            else:
                self.errors.append(f"{path}: {r.status_code} {r.text[:200]}")
        except httpx.HTTPError as exc:
            self.errors.append(f"{path}: {exc!r}")
        finally:
            sem.release()

    async def paced(self, stop: asyncio.Event, rate: float, count: int, path: str, kind: str, in_flight: int) -> None:
        """One request every count/rate seconds (never in bursts to catch up: if the service answers
        slower than that with `in_flight` requests pending, the rate achieved is lower, and shown)."""
        if rate <= 0:
            return
        period = count / rate
        sem = asyncio.Semaphore(in_flight)
        due = time.monotonic()
        while not stop.is_set():
            items = self._items(count)
            body = orjson.dumps({"invoices": items} if kind == "bulk" else items[0])
            await sem.acquire()
            task = asyncio.create_task(self._post(path, body, count, kind, sem))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            due = max(due + period, time.monotonic() - period)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks)

    def created(self) -> int:
        return sum(n for _, n, _ in self.accepted)

    def rate(self, kind: str | None, t0: float, t1: float) -> float:
        return sum(n for t, n, k in self.accepted if t0 <= t <= t1 and kind in (None, k)) / (t1 - t0)


# -- payments --------------------------------------------------------------------------------------
async def pay(client: httpx.AsyncClient, url: str, auth: dict, item: dict, reference: str) -> dict:
    """One payment; sent once more, with the same reference (the payment's idempotency key), if the
    connection was dropped before an answer (a replay of one that did arrive answers 200)."""
    sent_at, sent = time.time(), time.perf_counter()
    body = {
        "invoice_external_id": item["external_id"],
        "amount": item["amount_due"],
        "currency": item["currency"],
        "received_at": datetime.utcnow().isoformat() + "Z",
        "reference": reference,
    }
    try:
        r = await client.post(f"{url}/v1/payments", headers=auth, timeout=60, json=body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        r = await client.post(f"{url}/v1/payments", headers=auth, timeout=60, json=body)
    answered = time.time()
    took = (time.perf_counter() - sent) * 1000
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /v1/payments: {r.status_code} {r.text[:300]}")
    view = r.json()
    if not view["settled"]:
        raise RuntimeError(f"payment did not settle its invoice: {view}")
    return {
        "invoice_id": view["invoice_id"],
        "acknowledged_at": _ts(view["acknowledged_at"]),
        "sent": sent_at,
        "answered": answered,
        "api_ms": took,
    }


async def still_scheduled(conn: asyncpg.Connection, invoice_ids: list[str]) -> int:
    """How many of these invoices have a timer still scheduled (the scheduler's own table)."""
    return await conn.fetchval(
        "SELECT count(DISTINCT invoice_id) FROM scheduler.timers"
        " WHERE invoice_id = ANY($1::text[]) AND state = 'scheduled'",
        invoice_ids,
    )


def mail_files(maildir: Path) -> set[str]:
    return set(os.listdir(maildir)) if maildir.exists() else set()


# -- the phase -------------------------------------------------------------------------------------
async def bench_cancel_under_load(stack, client: httpx.AsyncClient, window=None) -> dict:
    """One round; `window` (an async context manager, e.g. a `Phases.phase`) wraps the measured
    window, from the first payment until every paid invoice's timers are cancelled."""
    load = await create_tenant(stack.database_url, "Bench Load Ltd")
    payer = await create_tenant(stack.database_url, "Bench Cancel Under Load Ltd")
    load_auth = {"Authorization": f"Bearer {load['api_key']}"}
    pay_auth = {"Authorization": f"Bearer {payer['api_key']}"}
    ingest_url, recon_url = stack.url("invoice-ingest"), stack.url("reconciliation")
    (
        await client.put(
            f"{stack.url('scheduler')}/v1/policy",
            headers=load_auth,
            json={"anchor": "issued_at", "stages": [{"name": "soft", "offset": f"PT{LEAD}S"}]},
        )
    ).raise_for_status()

    stages = TopicTail(stack.kafka_bootstrap_servers, STAGES_TOPIC)
    await stages.start()
    payments = TopicTail(stack.kafka_bootstrap_servers, PAYMENTS_TOPIC)
    await payments.start()
    conn = await asyncpg.connect(stack.database_url)
    stop, loops = asyncio.Event(), []
    try:
        # The invoices to be paid: planned (every stage scheduled) before the load starts.
        run = uuid.uuid4().hex[:6]
        items = [invoice(run, i, prefix="L") for i in range(N_PAYMENTS)]
        r = await client.post(f"{ingest_url}/v1/invoices/bulk", json={"invoices": items}, headers=pay_auth, timeout=120)
        r.raise_for_status()
        invoice_ids = [res["id"] for res in r.json()["results"]]

        def keep(e: dict) -> bool:
            t, tenant = e.get("type"), e.get("tenantid")
            return (
                tenant == payer["tenant_id"] and t in ("dunning.DunningPlanned.v1", "dunning.StagesCancelled.v1")
            ) or (tenant == load["tenant_id"] and t == "dunning.StageEscalated.v1")

        deadline = time.monotonic() + 120
        while len(stages.of("dunning.DunningPlanned.v1", payer["tenant_id"])) < N_PAYMENTS:
            if time.monotonic() > deadline:
                raise TimeoutError("the invoices to be paid were not planned")
            await asyncio.sleep(0.2)
            await stages.catch_up(keep)
        await asyncio.sleep(1)

        # Background load, then the payments once stages fire and mails flow.
        maildir = stack.workdir / "mail" / "new"
        mails_before = mail_files(maildir)
        roots = stack_roots(stack)
        ingest = Ingest(client, ingest_url, load_auth)
        loops = [
            asyncio.create_task(ingest.paced(stop, BULK_RATE, BULK_BATCH, "/v1/invoices/bulk", "bulk", 4)),
            asyncio.create_task(ingest.paced(stop, SINGLE_RATE, 1, "/v1/invoices", "single", 32)),
        ]
        await asyncio.sleep(LEAD + RAMP)
        if ingest.errors:
            raise RuntimeError(f"background ingest failed: {ingest.errors[:3]}")

        async with window or contextlib.nullcontext():
            cpu0 = cpu_sample(roots)
            own0 = _own_cpu()
            lag = LoopLag()
            lag.start()
            t0 = time.monotonic()
            tasks: list[asyncio.Task] = []
            slips: list[float] = []
            # Idle connections are let go before uvicorn's 5 s keep-alive closes them under a request.
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
            async with httpx.AsyncClient(limits=limits) as pc:
                while len(tasks) < len(items):  # open loop: payment i leaves at t0 + i / rate (all due ones at once)
                    while len(tasks) < len(items) and (i := len(tasks)) / PAYMENT_RATE <= time.monotonic() - t0:
                        slips.append((time.monotonic() - t0 - i / PAYMENT_RATE) * 1000)
                        tasks.append(asyncio.create_task(pay(pc, recon_url, pay_auth, items[i], f"PAYL-{run}-{i}")))
                    await asyncio.sleep(max(0.0, t0 + len(tasks) / PAYMENT_RATE - time.monotonic()))
                paid = await asyncio.gather(*tasks)
            deadline = time.monotonic() + 60
            while (left := await still_scheduled(conn, invoice_ids)) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            cpu1 = cpu_sample(roots)
        own1 = _own_cpu()
        await lag.stop()
        stop.set()
        await asyncio.gather(*loops)
        await ingest.drain()
        if ingest.errors:
            raise RuntimeError(f"background ingest failed: {ingest.errors[:3]}")

        # Let the load tenant's last stages fire and be delivered, so the next figures start quiet.
        expected = ingest.created()
        deadline = time.monotonic() + 300
        while len(mail_files(maildir) - mails_before) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        delivered_all = len(mail_files(maildir) - mails_before)
        await stages.catch_up(keep)
        await payments.catch_up(
            lambda e: e.get("type") == "dunning.PaymentReceived.v1" and e.get("tenantid") == payer["tenant_id"]
        )
    finally:
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await conn.close()
        await stages.stop()
        await payments.stop()

    w0, w1 = cpu0[0], cpu1[0]
    seconds = w1 - w0
    cancels = {
        e["data"]["invoice_id"]: (_ts(e["data"]["cancelled_at"]), ts / 1000)
        for ts, e in stages.of("dunning.StagesCancelled.v1", payer["tenant_id"])
    }
    published = {
        e["data"]["invoice_id"]: ts / 1000 for ts, e in payments.of("dunning.PaymentReceived.v1", payer["tenant_id"])
    }
    event_ms, kafka_ms, ack_to_published, published_to_cancelled = [], [], [], []
    for p in paid:
        if p["invoice_id"] in cancels:
            cancelled_at, on_kafka = cancels[p["invoice_id"]]
            event_ms.append((cancelled_at - p["acknowledged_at"]) * 1000)
            kafka_ms.append((on_kafka - p["answered"]) * 1000)
            if p["invoice_id"] in published:
                ack_to_published.append((published[p["invoice_id"]] - p["acknowledged_at"]) * 1000)
                published_to_cancelled.append((cancelled_at - published[p["invoice_id"]]) * 1000)
    fired = [
        (_ts(e["data"]["fired_at"]), _ts(e["data"]["scheduled_at"]))
        for _, e in stages.of("dunning.StageEscalated.v1", load["tenant_id"])
    ]
    in_window = [(f, s) for f, s in fired if w0 <= f <= w1]
    mails = [os.stat(maildir / name).st_mtime for name in mail_files(maildir) - mails_before]
    return {
        "cancel_latency_under_load_ms": {
            **summary(event_ms),
            "missing": len(paid) - len(event_ms),
            "still_scheduled_after_60s": left,
        },
        "cancel_under_load": {
            # where the time goes: reconciliation (commit, outbox relay), then the scheduler (consumer)
            "ack_to_payment_received_on_kafka_ms": summary(ack_to_published),
            "payment_received_on_kafka_to_cancelled_ms": summary(published_to_cancelled),
            "answer_to_stages_cancelled_on_kafka_ms": summary(kafka_ms),
            "payments_api_ms": summary([p["api_ms"] for p in paid]),
            "payments_sent_to_acknowledged_ms": summary([(p["acknowledged_at"] - p["sent"]) * 1000 for p in paid]),
            "payments_per_s": round(len(paid) / max(max(p["answered"] for p in paid) - w0, 1e-3), 1),
            "window_s": round(seconds, 1),
            "invoices_ingested_per_s": round(ingest.rate(None, w0, w1)),
            "bulk_invoices_per_s": round(ingest.rate("bulk", w0, w1)),
            "single_invoices_per_s": round(ingest.rate("single", w0, w1)),
            "stages_fired_per_s": round(len(in_window) / seconds),
            "fire_lateness_ms": summary([(f - s) * 1000 for f, s in in_window]),
            "emails_per_s": round(sum(1 for m in mails if w0 <= m <= w1) / seconds),
            "stack_cpu_cores": round((sum(cpu1[1].values()) - sum(cpu0[1].values())) / seconds, 2),
            "stack_cpu_cores_by_process": {n: round((cpu1[1][n] - cpu0[1][n]) / seconds, 2) for n in cpu1[1]},
            "machine_cpu_cores": round((cpu1[2] - cpu0[2]) / seconds, 2),
            "bench_client_cpu_cores": round((own1 - own0) / seconds, 2),
            "bench_loop_lag_ms": summary(lag.lags),
            "payment_send_slip_ms": summary(slips),
            "cores": os.cpu_count(),
            "background_invoices": expected,
            "background_stages_fired": len(fired),
            "background_mails_delivered": delivered_all,
        },
    }


def report_under_load(out: dict) -> None:
    c, b = out["cancel_latency_under_load_ms"], out["cancel_under_load"]

    def pp(key: str) -> str:
        v = b[key]
        return f"p50 {v['p50']} ms, p99 {v['p99']} ms" if v["n"] else "none"

    if c["n"]:
        print(
            f"  ... under load           p50 {c['p50']} ms, p99 {c['p99']} ms, max {c['max']} ms over {c['n']}"
            + (f" ({c['missing']} never cancelled)" if c["missing"] else ""),
            flush=True,
        )
        print(
            f"      split: ack -> PaymentReceived on Kafka {pp('ack_to_payment_received_on_kafka_ms')};"
            f" -> cancelled by the scheduler {pp('payment_received_on_kafka_to_cancelled_ms')}",
            flush=True,
        )
        print(
            "      client side: 2xx answer -> StagesCancelled on Kafka"
            f" {pp('answer_to_stages_cancelled_on_kafka_ms')}; POST /v1/payments took {pp('payments_api_ms')}"
            f" (sent -> acknowledged_at"
            f" {pp('payments_sent_to_acknowledged_ms')})",
            flush=True,
        )
    else:
        print("  ... under load           no cancellation observed", flush=True)
    lat = b["fire_lateness_ms"]
    print(
        f"      load in that {b['window_s']} s window: {b['invoices_ingested_per_s']} invoices/s ingested"
        f" ({b['bulk_invoices_per_s']} bulk + {b['single_invoices_per_s']} single),"
        f" {b['stages_fired_per_s']} stages fired/s (due -> fired p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms),"
        f" {b['emails_per_s']} emails/s, {b['payments_per_s']} payments/s;"
        f" CPU: stack {b['stack_cpu_cores']}, bench client {b['bench_client_cpu_cores']},"
        f" whole machine {b['machine_cpu_cores']} of {b['cores']} cores"
        f" (client loop lag p99 {b['bench_loop_lag_ms'].get('p99')} ms)",
        flush=True,
    )
