"""`make bench`, figures 4 and 5: due timers -> StageEscalated, and reminders delivered to SMTP.

Each escalation round imports BENCH_ESCALATE invoices for a new tenant whose one stage is due a
second after issue, while the scheduler runs with its firing loop off (SCHEDULER_FIRING_ENABLED=
false): it plans every invoice, and nothing can fire however long the import and the planning take
(before, a fixed 30 s lead raced them and the phase printed "not measured"). Once everything is
planned and due, the scheduler is started again with firing on, and the figure is the rate at which
the backlog of due timers reaches Kafka as StageEscalated (first to last event seen). The notifier is
down meanwhile; afterwards it is started and the mails reaching the SMTP server are counted in
consecutive windows of BENCH_DELIVERY_SECONDS, one per round (the escalations of every round are its
backlog).
"""

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx

from dunning_cli.tenants import create_tenant
from dunning_tools.bench.figures import Figure
from dunning_tools.bench.measure import invoice
from dunning_tools.bench.phases import Phases
from dunning_tools.bench.watch import Watcher, wait_until_quiet
from dunning_tools.stack.procs import stop
from dunning_tools.stack.system import Stack

N_ESCALATE = int(os.environ.get("BENCH_ESCALATE", 20000))
DELIVERY_WINDOW = float(os.environ.get("BENCH_DELIVERY_SECONDS", 20))
BULK_TIMEOUT = 600  # a 10,000-invoice request on a machine shared with other work took over 120 s
LEAD = 1  # issue -> stage due, seconds: firing is held until everything is planned anyway


def _stop(stack: Stack, name: str, env: dict[str, str] | None = None) -> None:
    """Stop a service (SIGTERM: it drains), its environment updated for its next start."""
    for sp in stack.procs:
        if sp.name == name:
            stop(sp.proc)
            sp.env.update(env or {})


async def _start(stack: Stack, name: str) -> None:
    for sp in stack.procs:
        if sp.name == name:
            sp.start()
            await asyncio.to_thread(sp.wait_ready)


async def escalate_round(stack: Stack, client: httpx.AsyncClient, phases: Phases, last: bool) -> float:
    """One round: import and plan with firing held, then release it; StageEscalated per second."""
    tenant = await create_tenant(stack.database_url, "Bench Escalation Ltd")
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    r = await client.put(
        f"{stack.url('scheduler')}/v1/policy",
        headers=auth,
        json={"anchor": "issued_at", "stages": [{"name": "soft", "offset": f"PT{LEAD}S"}]},
    )
    r.raise_for_status()
    _stop(stack, "scheduler", {"SCHEDULER_FIRING_ENABLED": "false"})
    await _start(stack, "scheduler")
    async with Watcher(stack.kafka_bootstrap_servers, "dunning.stages.v1", from_end=True) as stages:
        began = time.monotonic()
        async with phases.phase("escalate_import"):
            run = uuid.uuid4().hex[:6]
            for b in range(0, N_ESCALATE, 10000):
                items = [invoice(run, i) for i in range(b, min(b + 10000, N_ESCALATE))]
                url = f"{stack.url('invoice-ingest')}/v1/invoices/bulk"
                r = await client.post(url, json={"invoices": items}, headers=auth, timeout=BULK_TIMEOUT)
                r.raise_for_status()
            await stages.wait_for("dunning.DunningPlanned.v1", tenant["tenant_id"], N_ESCALATE, timeout=600)
            await wait_until_quiet(stack, stopped=("notifier",))
        planned = time.monotonic()
        early = len(stages.of("dunning.StageEscalated.v1", tenant["tenant_id"]))
        if early:  # the firing loop was off: this would be a bug in the scheduler's setting
            raise RuntimeError(f"{early} stages fired with SCHEDULER_FIRING_ENABLED=false")
        _stop(stack, "scheduler", {"SCHEDULER_FIRING_ENABLED": "true"})
        async with phases.phase("escalate_drain", profile=last):  # the scheduler's start-up CPU included
            await _start(stack, "scheduler")
            await stages.wait_for("dunning.StageEscalated.v1", tenant["tenant_id"], N_ESCALATE, timeout=600)
        times = sorted(t for t, _ in stages.of("dunning.StageEscalated.v1", tenant["tenant_id"]))
    # The watcher's clock is when a poll returned (100 ms at most apart): a drain shorter than
    # that reads as one instant, hence the floor.
    rate = (len(times) - 1) / max(times[-1] - times[0], 0.1)
    print(
        f"  escalation: {N_ESCALATE} imported and planned with firing held in {planned - began:.1f} s,"
        f" then {rate:,.0f} stages/s over {times[-1] - times[0]:.2f} s",
        flush=True,
    )
    return rate


async def bench_escalate(stack: Stack, client: httpx.AsyncClient, phases: Phases, rounds: int) -> Figure:
    fig = Figure("due timer -> StageEscalated", "stages/s", note=f"{N_ESCALATE} due at once, firing held until planned")
    _stop(stack, "notifier")  # deliveries are measured afterwards (bench_deliver)
    for i in range(rounds):
        fig.rounds.append(round(await escalate_round(stack, client, phases, last=i == rounds - 1)))
    return fig


def _mail_times(maildir: Path, skip: set[str]) -> list[float]:
    if not maildir.exists():
        return []
    out = []
    for name in set(os.listdir(maildir)) - skip:
        try:
            out.append(os.stat(maildir / name).st_mtime)
        except FileNotFoundError:
            continue
    return out


async def bench_deliver(stack: Stack, phases: Phases, rounds: int) -> Figure:
    """The notifier started on the escalations' backlog: mails stored per second, one window a round
    (the first from the first mail, so its start-up is not counted)."""
    fig = Figure("reminders -> SMTP server", "mails/s", note=f"windows of {DELIVERY_WINDOW:g} s")
    maildir = stack.workdir / "mail" / "new"
    before = set(os.listdir(maildir)) if maildir.exists() else set()
    for sp in stack.procs:
        if sp.name == "notifier":
            sp.start()
    deadline = time.monotonic() + 120
    while not _mail_times(maildir, before):
        if time.monotonic() > deadline:
            raise TimeoutError("the notifier delivered nothing in 120 s")
        await asyncio.sleep(0.2)
    start = min(_mail_times(maildir, before))
    for i in range(rounds):
        async with phases.phase("deliver", profile=i == rounds - 1):
            await asyncio.sleep(max(0.0, start + DELIVERY_WINDOW - time.time()))
        end = start + DELIVERY_WINDOW
        stamps = [t for t in _mail_times(maildir, before) if start <= t < end]
        if len(stamps) > 1:  # a backlog that ran out before the window's end: the rate while it lasted
            fig.rounds.append(round(len(stamps) / (min(end, max(stamps)) - start)))
        start = end
    return fig
