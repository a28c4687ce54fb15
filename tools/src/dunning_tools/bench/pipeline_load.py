"""The whole-pipeline bench's load and what it reads back; bench/pipeline.py runs the steps.

One tenant per channel (a lane): its policy has one stage, `lead` seconds after issue, on that channel
only. Each lane ingests invoices through POST /v1/invoices/bulk in small batches every PERIOD seconds,
so that its stages fall due continuously; a share of them is paid (POST /v1/payments) or held
(POST /v1/holds) `pay_ahead` seconds before the stage is due. What arrived is read at the providers'
side where the stand-in keeps a precise time (the SMTP server's X-Received-At, the webhook receiver's
received_at), else from the notifier's `sent_at` (SMS and letters: the provider's 2xx answer).
"""

import asyncio
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from dunning_cli.tenants import create_tenant
from dunning_tools.bench import rest
from dunning_tools.bench.cancel import pay
from dunning_tools.bench.measure import invoice
from dunning_tools.stack.system import Stack

PERIOD = 0.2  # seconds between two bulk requests of a lane
IN_FLIGHT = 4  # bulk requests of a lane at once; beyond, the lane skips (the achieved rate shows it)
GOLDEN = (math.sqrt(5) - 1) / 2  # spreads the paid and held invoices evenly over the load
GROUPS = ("services", "postgresql", "broker")  # counted; the stand-ins (SMTP, providers) are not


@dataclass
class Lane:
    """One channel's tenant; `share` of the reminders offered go through it."""

    channel: str
    share: float
    tenant: dict
    hook: str | None = None  # the webhook receiver's name (the webhook lane)

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.tenant['api_key']}"}


@dataclass
class Issued:
    lane: Lane
    invoice_id: str
    item: dict
    answered: float  # the client's clock when the bulk answer came (the stage is due ~lead s later)
    kind: str  # "remind" | "pay" | "hold"
    acknowledged: float | None = None  # the payment's or hold's acknowledged_at
    stop_error: str | None = None


@dataclass(frozen=True)
class Arrival:
    tenant_id: str
    invoice_id: str
    at: float  # delivered at the provider (epoch seconds)
    scheduled: float  # the stage's due time


def parse_mix(text: str) -> dict[str, float]:
    """'email=85,sms=6' -> {'email': 0.85..., 'sms': 0.06...} normalised to 1."""
    pairs = [p.split("=") for p in text.split(",") if p.strip()]
    weights = {k.strip(): float(v) for k, v in pairs if float(v) > 0}
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


async def setup_lanes(stack: Stack, client: httpx.AsyncClient, mix: dict[str, float], lead: int) -> list[Lane]:
    lanes = []
    for channel, share in mix.items():
        tenant = await create_tenant(stack.database_url, f"Bench Pipeline {channel} {os.urandom(3).hex()}")
        lane = Lane(channel, share, tenant)
        policy = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": f"PT{lead}S", "channels": [channel]}]}
        (await client.put(f"{stack.url('scheduler')}/v1/policy", headers=lane.auth, json=policy)).raise_for_status()
        if channel == "webhook":
            lane.hook = f"pipeline-{tenant['tenant_id'][-8:]}"
            endpoint = {"url": f"{stack.providers_url}/hooks/{lane.hook}", "event_types": ["reminder.due"]}
            r = await client.post(f"{stack.url('notifier')}/v1/webhook-endpoints", headers=lane.auth, json=endpoint)
            r.raise_for_status()
        lanes.append(lane)
    return lanes


def body(lane: Lane, run: str, i: int) -> dict:
    """measure.invoice, with what the lane's channel needs (a phone, a postal address)."""
    item = invoice(run, i, prefix=f"P{lane.channel[0]}")
    customer = item["customer"]
    if lane.channel == "sms":
        customer["phone"] = f"+49151{10000001 + 13 * (i % 500):08d}"  # valid, never ending 0000 (undelivered)
    if lane.channel == "letter":
        customer["postal_address"] = {
            "name": customer["name"],
            "lines": ["Friedrichstraße 100"],
            "postal_code": "10117",
            "city": "Berlin",
            "country": "DE",
        }
    return item


class Load:
    """Reminders offered at `rate` per second over the lanes; `stop_share` more invoices are ingested
    and stopped before their stage (paid `pay_share`, held the rest)."""

    def __init__(
        self,
        stack: Stack,
        client: httpx.AsyncClient,
        lanes: list[Lane],
        rate: float,
        *,
        lead: int,
        pay_ahead: float,
        pay_share: float,
        hold_share: float,
    ):
        self.stack, self.client, self.lanes = stack, client, lanes
        self.rate, self.lead, self.pay_ahead = rate, lead, pay_ahead
        self.pay_share, self.hold_share = pay_share, hold_share
        self.run = os.urandom(3).hex()
        self.n = 0
        self.issued: list[Issued] = []
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task] = set()

    def _kind(self, i: int) -> str:
        frac = (i * GOLDEN) % 1
        return "pay" if frac < self.pay_share else "hold" if frac < self.pay_share + self.hold_share else "remind"

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run_until(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._lane(lane, stop) for lane in self.lanes))

    async def _lane(self, lane: Lane, stop: asyncio.Event) -> None:
        per_s = self.rate * lane.share / (1 - self.pay_share - self.hold_share)
        sem, owed, due = asyncio.Semaphore(IN_FLIGHT), 0.0, time.monotonic()
        while not stop.is_set():
            owed += per_s * PERIOD
            count, owed = int(owed), owed - int(owed)
            if count and not sem.locked():
                await sem.acquire()
                lo, self.n = self.n, self.n + count
                self._spawn(self._post(lane, [body(lane, self.run, i) for i in range(lo, lo + count)], lo, sem))
            due += PERIOD
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _post(self, lane: Lane, items: list[dict], first: int, sem: asyncio.Semaphore) -> None:
        try:
            r = await self.client.post(
                f"{self.stack.url('invoice-ingest')}/v1/invoices/bulk",
                content=orjson.dumps({"invoices": items}),
                headers={**lane.auth, "Content-Type": "application/json"},
                timeout=60,
            )
            answered = time.time()
            if r.status_code != 200:
                self.errors.append(f"bulk: {r.status_code} {r.text[:200]}")
                return
            for k, (item, res) in enumerate(zip(items, r.json()["results"], strict=True)):
                issued = Issued(lane, res["id"], item, answered, self._kind(first + k))
                self.issued.append(issued)
                if issued.kind != "remind":
                    self._spawn(self._stop(issued, answered + self.lead - self.pay_ahead))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            self.errors.append(f"bulk: {exc!r}")
        finally:
            sem.release()

    async def _stop(self, issued: Issued, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        try:
            if issued.kind == "pay":
                ref = f"PAY-{self.run}-{issued.invoice_id}"
                paid = await pay(self.client, self.stack.url("reconciliation"), issued.lane.auth, issued.item, ref)
                issued.acknowledged = paid["acknowledged_at"]
            else:
                r = await self.client.post(
                    f"{self.stack.url('invoice-ingest')}/v1/holds",
                    headers=issued.lane.auth,
                    json={"invoice_id": issued.invoice_id, "reason": "bench", "placed_by": "bench"},
                    timeout=60,
                )
                if r.status_code != 201:
                    raise RuntimeError(f"POST /v1/holds: {r.status_code} {r.text[:200]}")
                issued.acknowledged = datetime.fromisoformat(r.json()["acknowledged_at"]).timestamp()
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
            issued.stop_error = repr(exc)[:300]

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


# -- what arrived -----------------------------------------------------------------------------------
_HEADER = re.compile(rb"^(X-Received-At|X-Dunning-Tenant-Id|X-Dunning-Invoice-Id|X-Dunning-Scheduled-At): *(\S+)", re.M)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def mail_files(stack: Stack) -> set[str]:
    maildir = stack.workdir / "mail" / "new"
    return set(os.listdir(maildir)) if maildir.exists() else set()


def email_arrivals(stack: Stack, names: set[str]) -> list[Arrival]:
    out, maildir = [], stack.workdir / "mail" / "new"
    for name in names:
        with open(maildir / name, "rb") as f:
            head = f.read(8192).split(b"\r\n\r\n", 1)[0]
        h = {k.decode(): v.decode() for k, v in _HEADER.findall(head)}
        if "X-Dunning-Invoice-Id" in h and "X-Dunning-Scheduled-At" in h:
            out.append(
                Arrival(
                    h.get("X-Dunning-Tenant-Id", ""),
                    h["X-Dunning-Invoice-Id"],
                    ts(h["X-Received-At"]),
                    ts(h["X-Dunning-Scheduled-At"]),
                )
            )
    return out


def hook_path(stack: Stack, lane: Lane) -> Path:
    return stack.workdir / "providers" / "hooks" / f"{lane.hook}.jsonl"


def webhook_arrivals(stack: Stack, lane: Lane) -> list[Arrival]:
    path = hook_path(stack, lane)
    out = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        record = orjson.loads(line)
        data = orjson.loads(record["body"])["data"]
        at, scheduled = ts(record["received_at"]), ts(data["scheduled_at"])
        out.append(Arrival(lane.tenant["tenant_id"], data["invoice_id"], at, scheduled))
    return out


async def sent_arrivals(conn: asyncpg.Connection, lanes: list[Lane]) -> list[Arrival]:
    """SMS and letters: the notifier's sent_at (the provider's 2xx answer)."""
    rows = await conn.fetch(
        "SELECT tenant_id, invoice_id, sent_at, payload->>'scheduled_at' AS scheduled"
        " FROM notifier.deliveries WHERE tenant_id = ANY($1::text[]) AND state = 'sent'",
        [lane.tenant["tenant_id"] for lane in lanes],
    )
    return [Arrival(r["tenant_id"], r["invoice_id"], r["sent_at"].timestamp(), ts(r["scheduled"])) for r in rows]


async def arrivals(stack: Stack, conn: asyncpg.Connection, lanes: list[Lane], new_mail: set[str]) -> list[Arrival]:
    out = email_arrivals(stack, new_mail) if any(lane.channel == "email" for lane in lanes) else []
    for lane in lanes:
        if lane.channel == "webhook":
            out += webhook_arrivals(stack, lane)
    db_lanes = [lane for lane in lanes if lane.channel not in ("email", "webhook")]
    return out + (await sent_arrivals(conn, db_lanes) if db_lanes else [])


async def arrived_count(stack: Stack, conn: asyncpg.Connection, lanes: list[Lane]) -> int:
    """How many reminders have arrived so far, every step's (cheap: counts, no parsing)."""
    count = 0
    for lane in lanes:
        if lane.channel == "email":
            count += len(mail_files(stack))
        elif lane.channel == "webhook":
            path = hook_path(stack, lane)
            count += path.read_bytes().count(b"\n") if path.exists() else 0
    db_lanes = [lane.tenant["tenant_id"] for lane in lanes if lane.channel not in ("email", "webhook")]
    if db_lanes:
        count += await conn.fetchval(
            "SELECT count(*) FROM notifier.deliveries WHERE tenant_id = ANY($1::text[]) AND state = 'sent'", db_lanes
        )
    return count


# -- work per reminder ------------------------------------------------------------------------------
async def work_counters(conn: asyncpg.Connection, consumer: AIOKafkaConsumer) -> dict[str, int]:
    """Transactions committed and rows written in the database, and the end offsets of every topic (not
    the broker's own) summed: records on Kafka, produce batches on Tansu (it gives a batch one offset)."""
    row = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows_written"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    topics = [t for t in await consumer.topics() if not t.startswith("__")]
    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    records = sum((await consumer.end_offsets(tps)).values()) if tps else 0
    return {"pg_commits": row["xact_commit"], "pg_rows_written": row["rows_written"], "kafka_offsets": records}


# -- CPU per process group --------------------------------------------------------------------------
@dataclass
class CpuSample:
    at: float
    by_pid: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (group, CPU seconds)


def cpu_sample() -> CpuSample:
    """CPU seconds of every process this one started (services, PostgreSQL and its backends, broker)."""
    return CpuSample(time.time(), rest.cpu_by_process())


def cpu_cores(s0: CpuSample, s1: CpuSample) -> dict[str, float]:
    """Cores used per group between two samples (rest.cpu_by_group), with `services` the sum of the
    four services and each service on its own."""
    used = rest.cpu_by_group(s0.by_pid, s1.by_pid)
    out = {"services": sum(used.get(g, 0.0) for g in rest.SERVICES)}
    out |= {g: used.get(g, 0.0) for g in ("postgresql", "broker", *rest.SERVICES)}
    return {g: round(v / (s1.at - s0.at), 3) for g, v in out.items()}
