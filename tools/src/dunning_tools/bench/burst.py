"""A finance platform's Monday 09:00: 100,000 reminders due in the same minute (issue 13, item 3).

    python -m dunning_tools.bench.burst [--quick] [--reminders 100000] [--customers 5000] [--rounds N]

On its own stack (PostgreSQL with fsync on, Tansu, the SMTP stand-in, one process per service), each
round makes a tenant whose policy has one e-mail stage at an instant T (due date at `send_time` plus
seconds; no consolidation, the product's default: one mail per reminder), then imports `reminders`
invoices for `customers` customers, all due at T. T lies ahead by the set-up time measured on a
calibration import (or the previous round) times SAFETY plus a margin; the round waits until every
timer is planned and the stack is quiet, and is voided (never measured) if that came later than
T - GUARD. From T it measures: seconds until the last mail reached the SMTP server, firing lateness
(the scheduler's fired_at, StageEscalated's, - T) and delivery lateness (X-Received-At - T) p50/p99,
lost and duplicated reminders (stage, delivery and Message-ID counted in the maildir), the CPU of each
process group and, last round, a py-spy profile of the scheduler and the notifier. Saved: .run/bench-burst.json.
How to read it: docs/bench-burst.md.
"""

import argparse
import asyncio
import math
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

from dunning_cli.tenants import create_tenant
from dunning_tools.bench import figures
from dunning_tools.bench.cancel import summary
from dunning_tools.bench.phases import Phases, Profiler
from dunning_tools.bench.watch import wait_until_quiet
from dunning_tools.stack.system import Stack

SAFETY = 1.5  # the lead is this many times the set-up time expected from the calibration
GUARD = 2.0  # set-up must be done (planned, quiet) this many seconds before T, else the round is void
PROFILED = ("scheduler", "notifier")  # py-spy on these in the last round (the firing and the sending)


@dataclass
class Config:
    reminders: int = 100_000
    customers: int = 5_000
    rounds: int = 1
    align: int = 60  # T on a whole minute (09:00:00); 1 for the small runs
    batch: int = 10_000  # invoices a bulk request, two in flight
    calibrate: int = 5_000  # invoices of the calibration import
    stall: float = 60.0  # no new mail for this long after T: the rest is lost
    margin: float = 10.0  # seconds added to the lead
    profile: bool = True


# -- the workload -----------------------------------------------------------------------------------
def item(run: str, i: int, customers: int, due: date) -> dict:
    c = i % customers
    return {
        "external_id": f"BU-{run}-{i}",
        "number": f"BU-{run}-{i}",
        "currency": "EUR",
        "amount_due": "100.00",
        "issue_date": date.today().isoformat(),
        "due_date": due.isoformat(),
        "customer": {
            "external_id": f"C-{run}-{c}",
            "name": f"Customer {c}",
            "email": f"ap-{run}-{c}@example.com",
            "locale": "en-GB",
            "timezone": "UTC",
        },
    }


def policy_at(t: datetime) -> dict:
    """One e-mail stage at exactly `t` (UTC customers): the due date at send_time plus t's seconds."""
    offset = f"PT{t.second}S" if t.second else "P0D"
    stage = {"name": "burst", "offset": offset, "channels": ["email"]}
    return {"anchor": "due_date", "send_time": t.strftime("%H:%M"), "stages": [stage]}


async def tenant_with_policy(stack: Stack, client: httpx.AsyncClient, name: str, t: datetime) -> dict:
    tenant = await create_tenant(stack.database_url, name)
    tenant["auth"] = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = await client.put(f"{stack.url('scheduler')}/v1/policy", headers=tenant["auth"], json=policy_at(t))
    r.raise_for_status()
    return tenant


async def import_invoices(stack: Stack, client: httpx.AsyncClient, tenant: dict, n: int, customers: int, t, batch):
    """POST /v1/invoices/bulk in batches, two requests in flight (a nightly sync)."""
    run, sem = uuid.uuid4().hex[:6], asyncio.Semaphore(2)
    headers = {**tenant["auth"], "Content-Type": "application/json"}

    async def send(lo: int) -> None:
        body = orjson.dumps({"invoices": [item(run, i, customers, t.date()) for i in range(lo, min(lo + batch, n))]})
        async with sem:
            r = await client.post(f"{stack.url('invoice-ingest')}/v1/invoices/bulk", content=body, headers=headers)
        r.raise_for_status()

    await asyncio.gather(*(send(lo) for lo in range(0, n, batch)))


async def planned(conn: asyncpg.Connection, tenant_id: str) -> tuple[int, int, int]:
    """(timers, of them scheduled, of them fired) of the tenant (scheduler.timers)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'scheduled') AS s,"
        " count(*) FILTER (WHERE state = 'fired') AS f FROM scheduler.timers WHERE tenant_id = $1",
        tenant_id,
    )
    return row["n"], row["s"], row["f"]


async def set_up(stack: Stack, client, conn, tenant: dict, n: int, customers: int, t: datetime, batch: int) -> float:
    """Import `n` invoices due at `t`, wait until every timer is planned and the stack is quiet; seconds."""
    began = time.monotonic()
    await import_invoices(stack, client, tenant, n, customers, t, batch)
    deadline = began + 3600
    while (await planned(conn, tenant["tenant_id"]))[0] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} invoices not planned in an hour")
        await asyncio.sleep(0.5)
    await wait_until_quiet(stack, timeout=3600)
    return time.monotonic() - began


# -- what arrived -----------------------------------------------------------------------------------
_HEADER = re.compile(
    rb"^(X-Received-At|X-Dunning-Tenant-Id|X-Dunning-Stage-Id|X-Dunning-Delivery-Id|Message-ID): *(\S+)", re.M | re.I
)


def maildir(stack: Stack) -> Path:
    return stack.workdir / "mail" / "new"


def mail_names(stack: Stack) -> set[str]:
    return set(os.listdir(maildir(stack))) if maildir(stack).exists() else set()


def read_mails(directory: Path, names: set[str], tenant_id: str) -> list[dict[str, str]]:
    """The trace and X-Dunning headers (names lower-cased) of the tenant's mails among `names`."""
    out = []
    for name in names:
        with open(directory / name, "rb") as f:
            head = f.read(8192).split(b"\r\n\r\n", 1)[0]
        h = {k.decode().lower(): v.decode() for k, v in _HEADER.findall(head)}
        if h.get("x-dunning-tenant-id") == tenant_id:
            out.append(h)
    return out


async def wait_for_mail(stack: Stack, before: set[str], n: int, stall: float) -> float:
    """Until `n` new mails are stored, or none came for `stall` seconds; the time.time() it ended."""
    count, since = -1, time.monotonic()
    while True:
        new = len(os.listdir(maildir(stack))) - len(before) if maildir(stack).exists() else 0
        if new >= n:
            return time.time()
        if new != count:
            count, since = new, time.monotonic()
        elif time.monotonic() - since > stall:
            return time.time()
        await asyncio.sleep(0.5)


async def settle(conn: asyncpg.Connection, tenant_id: str, timeout: float = 30) -> None:
    """Until the notifier has nothing pending or in flight for the tenant (a duplicate would be in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = await conn.fetchval(
            "SELECT count(*) FROM notifier.deliveries WHERE tenant_id = $1 AND state IN ('pending', 'sending')",
            tenant_id,
        )
        if not busy:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)


# -- one round --------------------------------------------------------------------------------------
def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def tally(stage_ids: list[str], mails: list[dict[str, str]]) -> dict:
    """What was due against what the SMTP server stored: lost (a stage with no mail), duplicates (mails
    beyond one a stage: a retried delivery or a stage delivered twice), and each stage's first arrival."""
    first: dict[str, float] = {}
    for m in mails:
        stage, at = m.get("x-dunning-stage-id", ""), _epoch(m["x-received-at"])
        first[stage] = min(at, first.get(stage, at))
    return {
        "first": first,
        "lost": sum(1 for s in stage_ids if s not in first),
        "duplicates": len(mails) - len(first),
        "distinct_delivery_ids": len({m.get("x-dunning-delivery-id") for m in mails}),
        "distinct_message_ids": len({m.get("message-id") for m in mails}),
        "strangers": len(set(first) - set(stage_ids)),  # a mail for a stage that was never due
    }


async def judge(stack: Stack, conn: asyncpg.Connection, tenant_id: str, t: float, new: set[str]) -> dict:
    """The round's figures from the scheduler's timers, the notifier's deliveries and the maildir."""
    timers = await conn.fetch(
        "SELECT stage_id, extract(epoch FROM scheduled_at) AS due, extract(epoch FROM fired_at) AS fired"
        " FROM scheduler.timers WHERE tenant_id = $1",
        tenant_id,
    )
    consumed = {
        r["stage_id"]: float(r["at"])
        for r in await conn.fetch(
            "SELECT stage_id, extract(epoch FROM created_at) AS at FROM notifier.deliveries WHERE tenant_id = $1",
            tenant_id,
        )
    }
    mails = await asyncio.to_thread(read_mails, maildir(stack), new, tenant_id)
    counted = tally([r["stage_id"] for r in timers], mails)
    first = counted.pop("first")
    fired = {r["stage_id"]: float(r["fired"]) for r in timers if r["fired"] is not None}
    delivered = sorted(first.values())
    last = delivered[-1] - t if delivered else None
    return {
        "reminders": len(timers),
        "fired": len(fired),
        "mails": len(mails),
        "off_time": sum(1 for r in timers if abs(float(r["due"]) - t) > 0.001),
        **counted,
        "seconds_to_last_delivery": round(last, 2) if last is not None else None,
        "seconds_to_last_firing": round(max(fired.values()) - t, 2) if fired else None,
        "reminders_per_s": round(len(first) / last, 1) if last else None,
        "firing_lateness_ms": summary([(f - t) * 1000 for f in fired.values()]),
        "delivery_lateness_ms": summary([(d - t) * 1000 for d in delivered]),
        # where the time went, per reminder: fired -> the notifier's delivery row -> the SMTP server
        "fired_to_consumed_ms": summary([(consumed[s] - f) * 1000 for s, f in fired.items() if s in consumed]),
        "consumed_to_mailed_ms": summary([(first[s] - c) * 1000 for s, c in consumed.items() if s in first]),
    }


async def run_round(stack: Stack, client, conn, cfg: Config, phases: Phases, setup_s: float, last: bool) -> dict:
    """One burst: set up ahead of T (lead from `setup_s`, the expected set-up seconds), then measure from T."""
    lead = SAFETY * setup_s + cfg.margin
    t = datetime.fromtimestamp(math.ceil((time.time() + lead) / cfg.align) * cfg.align, UTC)
    tenant = await tenant_with_policy(stack, client, f"Bench Burst {t:%H%M%S}", t)
    before = mail_names(stack)
    async with phases.phase("burst_setup"):
        took = await set_up(stack, client, conn, tenant, cfg.reminders, cfg.customers, t, cfg.batch)
    ready_by = t.timestamp() - time.time()
    _, scheduled, early = await planned(conn, tenant["tenant_id"])
    out: dict = {"due": t.isoformat(), "lead_s": round(lead, 1), "setup_s": round(took, 1)}
    out["ready_s_before_due"] = round(ready_by, 1)
    out["void"] = ready_by < GUARD or early > 0 or scheduled < cfg.reminders
    print(
        f"  {cfg.reminders:,} invoices due at {t:%H:%M:%S} imported, planned and quiet in {took:.1f} s"
        f" ({ready_by:.1f} s before due; lead {lead:.1f} s)"
        + (" -- VOID: set-up raced the burst" if out["void"] else ""),
        flush=True,
    )
    await asyncio.sleep(max(0.0, t.timestamp() - 1 - time.time()))
    profiler = Profiler(phases.profiles_dir, "burst") if last and cfg.profile else None
    if profiler is not None:  # the burst's path, named: in its first second the gate's watermarks lead
        targets = [(sp.proc.pid, sp.name) for sp in stack.procs if sp.name in PROFILED and sp.proc is not None]
        await asyncio.to_thread(profiler.attach, targets)
    await asyncio.sleep(max(0.0, t.timestamp() - time.time()))
    async with phases.phase("burst"):
        ended = await wait_for_mail(stack, before, cfg.reminders, cfg.stall)
    if profiler is not None:
        await asyncio.to_thread(profiler.stop)
        phases.profiles["burst"] = profiler.written
        phases.problems += [f"burst: {problem}" for problem in profiler.problems]
    await settle(conn, tenant["tenant_id"])
    out |= await judge(stack, conn, tenant["tenant_id"], t.timestamp(), mail_names(stack) - before)
    out["waited_s"] = round(ended - t.timestamp(), 1)
    print(report_round(out), flush=True)
    return out


def report_round(r: dict) -> str:
    f, d = r["firing_lateness_ms"], r["delivery_lateness_ms"]
    return (
        f"  burst: {r['reminders']:,} reminders, {r['mails']:,} mails; last delivered {r['seconds_to_last_delivery']} s"
        f" after due ({r['reminders_per_s']}/s), last fired {r['seconds_to_last_firing']} s;"
        f" firing lateness p50 {f.get('p50')} ms p99 {f.get('p99')} ms; delivery lateness p50 {d.get('p50')} ms"
        f" p99 {d.get('p99')} ms; lost {r['lost']}, twice {r['duplicates']}"
    )


# -- the bench --------------------------------------------------------------------------------------
KEYS = {
    "seconds_to_last_delivery": ("first due instant -> last reminder at the SMTP server", "s"),
    "firing_lateness_p50_ms": ("firing lateness p50 (StageEscalated.fired_at - due)", "ms"),
    "firing_lateness_p99_ms": ("firing lateness p99 (StageEscalated.fired_at - due)", "ms"),
    "delivery_lateness_p50_ms": ("delivery lateness p50 (received by SMTP - due)", "ms"),
    "delivery_lateness_p99_ms": ("delivery lateness p99 (received by SMTP - due)", "ms"),
    "reminders_per_s": ("reminders delivered per second over the burst", "/s"),
}


def _value(r: dict, key: str) -> float | None:
    if key.startswith(("firing_lateness", "delivery_lateness")):
        what, q = key.rsplit("_", 2)[0], key.rsplit("_", 2)[1]
        return r[f"{what}_ms"].get(q)
    return r[key]


async def calibrate(stack: Stack, client, conn, cfg: Config) -> float:
    """The set-up seconds a burst of `cfg.reminders` should take, from a smaller import due a month on."""
    n = min(cfg.reminders, cfg.calibrate)
    t = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=30)
    tenant = await tenant_with_policy(stack, client, "Bench Burst calibration", t)
    took = await set_up(stack, client, conn, tenant, n, max(1, n * cfg.customers // cfg.reminders), t, cfg.batch)
    print(f"  calibration: {n:,} invoices imported, planned and quiet in {took:.1f} s", flush=True)
    return took * cfg.reminders / n


async def bench(stack: Stack, cfg: Config, out_dir: Path = figures.RUN_DIR) -> tuple[dict[str, figures.Figure], dict]:
    phases = Phases(out_dir / "profiles", profile=cfg.profile)
    note = f"{cfg.reminders:,} reminders due at one instant for {cfg.customers:,} customers"
    figs = {key: figures.Figure(name, unit, note=note) for key, (name, unit) in KEYS.items()}
    rounds: list[dict] = []
    voided: list[dict] = []
    # a 10,000-invoice bulk on a loaded machine; connections kept idle under the server's 5 s only (at
    # exactly 5 s a reused connection may be the one uvicorn is closing: httpx.ReadError)
    limits = httpx.Limits(keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        conn = await asyncpg.connect(stack.database_url)
        try:
            setup_s = await calibrate(stack, client, conn, cfg)
            while len(rounds) < cfg.rounds and len(voided) <= cfg.rounds:
                r = await run_round(stack, client, conn, cfg, phases, setup_s, last=len(rounds) == cfg.rounds - 1)
                (voided if r["void"] else rounds).append(r)
                setup_s = r["setup_s"]  # the next lead from this one's measured set-up
                if len(rounds) < cfg.rounds:
                    await wait_until_quiet(stack)
        finally:
            await conn.close()
    for r in rounds:
        for key, fig in figs.items():
            if (v := _value(r, key)) is not None:
                fig.rounds.append(v)
    cpu = phases.report().get("burst", {})
    extra = {
        "config": asdict(cfg),
        "consolidation": "off: the tenants have no settings (the product's default), one mail a reminder",
        "reminders": sum(r["reminders"] for r in rounds),
        "mails": sum(r["mails"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds),
        "duplicates": sum(r["duplicates"] for r in rounds),
        "cpu_by_group": {
            "cpu_s": cpu.get("cpu_s"),
            "pct_of_a_core": cpu.get("pct_of_a_core"),
            "seconds": cpu.get("seconds"),
        },
        "cpu_by_phase": phases.report(),
        "profiles": phases.profiles,
        "profile_problems": phases.problems,
        "rounds": rounds,
        "voided": voided,
    }
    return figs, extra


def report(figs: dict[str, figures.Figure], extra: dict) -> str:
    lines = [f"{key:<28} {fig.text(1)}" for key, fig in figs.items()]
    lines.append(
        f"reminders {extra['reminders']:,}, mails {extra['mails']:,}: lost {extra['lost']}, twice {extra['duplicates']}"
    )
    pct = extra["cpu_by_group"]["pct_of_a_core"] or {}
    lines.append("CPU during the burst, % of a core: " + ", ".join(f"{g} {p}" for g, p in pct.items()))
    if extra["voided"]:
        lines.append(
            f"{len(extra['voided'])} round(s) void: their set-up was not done {GUARD:g} s before the due instant"
        )
    return "\n".join(lines)


def config(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 reminders for 250 customers, one round")
    parser.add_argument("--reminders", type=int)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--rounds", type=int, help="default: 1 at full size (a round takes minutes), else BENCH_ROUNDS")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    cfg = Config(profile=not args.no_profile and os.environ.get("BENCH_PROFILE", "1") != "0")
    if args.quick:
        cfg.reminders, cfg.customers, cfg.align, cfg.calibrate, cfg.stall = 5_000, 250, 1, 1_000, 30.0
    cfg.reminders = args.reminders or cfg.reminders
    cfg.customers = args.customers or cfg.customers
    if cfg.reminders < 100_000:
        cfg.rounds = 1 if args.quick else figures.ROUNDS
    cfg.rounds = args.rounds or cfg.rounds
    return cfg


def main() -> None:
    cfg = config(sys.argv[1:])
    rounds = f" ({cfg.rounds} round(s) of {cfg.reminders:,} reminders)"
    figures.run_on_own_stack("burst", lambda stack: bench(stack, cfg), report, rounds)


if __name__ == "__main__":
    main()
