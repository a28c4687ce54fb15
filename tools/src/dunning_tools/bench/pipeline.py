"""The whole pipeline under a sustained mixed load, stepped up until lateness p99 passes 2 s (issue 13).

    python -m dunning_tools.bench.pipeline [--quick] [--rates 25,50,100] [--measure 30] [--profile top2|all|none]

On its own stack (one replica per service, PostgreSQL with fsync on): invoices ingested whose one
stage falls due `lead` seconds later, on every channel (one tenant each: e-mail, SMS, webhook, letter,
BENCH_PIPELINE_MIX), a share paid or held just before its stage (pipeline_load.py). Each step offers
a rate of reminders; after a warm-up its window measures: reminders delivered per second, lateness
(delivered at the provider - due) p50/p99, payment acknowledged -> StagesCancelled p99, the CPU of
each process group (services, PostgreSQL, broker; not the stand-ins) and per delivered reminder;
then it lets every stage of the step come due and counts what was lost, sent twice, or sent after
its payment or hold. The highest step with lateness p99 <= 2 s is repeated (BENCH_ROUNDS in all, the
last one profiled with py-spy when installed). The reference, the notifier's CPU per reminder alone
(bench/notifier.py), runs against the same PostgreSQL first. Saved: .run/bench-pipeline.json.
How to read it: docs/bench-pipeline.md.
"""

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx

from dunning_tools.bench import figures
from dunning_tools.bench import pipeline_load as pl
from dunning_tools.bench.cancel import STAGES_TOPIC, TopicTail, _own_cpu, summary
from dunning_tools.bench.phases import Profiler
from dunning_tools.bench.pipeline_verdict import judge, passed, report_step
from dunning_tools.bench.system import wait_until_quiet
from dunning_tools.stack.system import Stack

BEHIND_SECONDS = 10.0
CANCELLED, FIRED = "dunning.StagesCancelled.v1", "dunning.StageEscalated.v1"
KEPT = (CANCELLED, FIRED)  # a step more than this many seconds of reminders behind is cut short


@dataclass
class Config:
    rates: list[float] = field(default_factory=lambda: [25, 50, 100, 200, 400])
    lead: int = 8  # issue -> due, seconds
    warm: float = 4.0  # after the first stages are due, before the window
    measure: float = 30.0  # the window
    pay_ahead: float = 1.0  # a stop comes this many seconds before its stage is due
    pay_share: float = 0.10
    hold_share: float = 0.05
    mix: dict[str, float] = field(default_factory=lambda: pl.parse_mix("email=85,sms=6,webhook=6,letter=3"))
    rounds: int = figures.ROUNDS
    notifier_count: int = 1000
    budget: float = 600.0  # seconds: no refinement or repeat is started beyond it
    profile: str = "top2"
    refine: bool = True

    def step_seconds(self) -> float:
        return 2 * self.lead + self.warm + self.measure + 20


@dataclass
class Ctx:
    stack: Stack
    client: httpx.AsyncClient
    conn: asyncpg.Connection
    lanes: list[pl.Lane]
    tail: TopicTail
    cfg: Config
    out_dir: Path


# -- one step -------------------------------------------------------------------------------------
async def run_step(ctx: Ctx, rate: float, spy: list[tuple[str, int]] | None = None) -> dict:
    cfg, stack = ctx.cfg, ctx.stack
    mail_before = pl.mail_files(stack)
    arrived_before = await pl.arrived_count(stack, ctx.conn, ctx.lanes)
    load = pl.Load(
        stack,
        ctx.client,
        ctx.lanes,
        rate,
        lead=cfg.lead,
        pay_ahead=cfg.pay_ahead,
        pay_share=cfg.pay_share,
        hold_share=cfg.hold_share,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(load.run_until(stop))
    await asyncio.sleep(cfg.lead + cfg.warm)
    work0 = await pl.work_counters(ctx.conn, ctx.tail.consumer)
    s0, own0 = pl.cpu_sample(), _own_cpu()
    profiler = Profiler(ctx.out_dir / "profiles", "pipeline") if spy else None
    if profiler and spy:
        profiler.attach([(pid, name) for name, pid in spy])
    aborted = None
    while (left := s0.at + cfg.measure - time.time()) > 0:
        await asyncio.sleep(min(2.0, left))
        if load.errors:
            aborted = f"ingest failed: {load.errors[0]}"
            break
        due = sum(1 for x in load.issued if x.kind == "remind" and x.answered + cfg.lead <= time.time())
        behind = due - (await pl.arrived_count(stack, ctx.conn, ctx.lanes) - arrived_before)
        if behind > max(50.0, rate * BEHIND_SECONDS):
            aborted = f"{behind} reminders behind"
            break
    s1, own1 = pl.cpu_sample(), _own_cpu()
    work1 = await pl.work_counters(ctx.conn, ctx.tail.consumer)
    profiles = profiled(profiler)
    stop.set()
    await runner
    await load.drain()
    drained = await drain(ctx, load, arrived_before)
    for _ in range(6):  # the counts can be met early (a stop after its stage was due): wait for the missing
        got = await pl.arrivals(stack, ctx.conn, ctx.lanes, pl.mail_files(stack) - mail_before)
        arrived = {a.invoice_id for a in got}
        if all(x.invoice_id in arrived for x in load.issued if x.kind == "remind"):
            break
        await asyncio.sleep(5)
    ids = {x.invoice_id for x in load.issued}
    ctx.tail.records.clear()  # this step's events only
    await ctx.tail.catch_up(lambda e: e.get("type") in KEPT and e["data"].get("invoice_id") in ids)
    events = [e for _, e in ctx.tail.records]
    cancelled = {e["data"]["invoice_id"]: pl.ts(e["data"]["cancelled_at"]) for e in events if e["type"] == CANCELLED}
    step = judge(ctx.lanes, cfg.lead, rate, load, got, cancelled, s0, s1, own1 - own0)
    fired = [(pl.ts(e["data"]["fired_at"]), pl.ts(e["data"]["scheduled_at"])) for e in events if e["type"] == FIRED]
    step["fire_lateness_ms"] = summary([(f - due) * 1000 for f, due in fired if s0.at <= due <= s1.at])
    delivered = step["achieved_reminders_per_s"] * step["window_s"]
    step["work_per_reminder"] = {k: round((work1[k] - work0[k]) / delivered, 1) if delivered else None for k in work0}
    step.update(aborted=aborted, drained=drained, profiles=profiles)
    try:
        step["quiet_after_s"] = round(await wait_until_quiet(stack, timeout=180), 1)
    except TimeoutError:
        step["quiet_after_s"] = None
    print(report_step(step), flush=True)
    return step


async def drain(ctx: Ctx, load: pl.Load, arrived_before: int) -> bool:
    """Wait until every stage of the step had its time and arrived, or nothing arrived for 20 s."""
    expected = sum(1 for x in load.issued if x.kind == "remind")
    last_due = max((x.answered for x in load.issued), default=time.time()) + ctx.cfg.lead
    seen, since = -1, time.monotonic()
    while True:
        count = await pl.arrived_count(ctx.stack, ctx.conn, ctx.lanes) - arrived_before
        if count >= expected and time.time() > last_due + 1:
            return True
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.time() > last_due + 5 and time.monotonic() - since > 20:
            return False
        await asyncio.sleep(0.5)


# -- py-spy (bench/phases.py's Profiler) ------------------------------------------------------------
def top_frames(path: Path, n: int = 12) -> list[tuple[str, float]]:
    """The functions where a speedscope profile's samples were (self time, % of the samples)."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    leaves: Counter[int] = Counter()
    for profile in doc["profiles"]:
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            if sample:
                leaves[sample[-1]] += weight
    total = sum(leaves.values()) or 1

    def name(i: int) -> str:
        f = frames[i]
        return f"{f['name']} ({Path(f.get('file') or '?').name}:{f.get('line')})"

    return [(name(i), round(100 * c / total, 1)) for i, c in leaves.most_common(n)]


def profiled(profiler: Profiler | None) -> dict:
    if profiler is None:
        return {}
    profiler.stop()
    tops = {Path(f).name: top_frames(Path(f)) for f in profiler.written}
    return {"files": profiler.written, "problems": profiler.problems, "top_self": tops}


# -- the reference ---------------------------------------------------------------------------------
def notifier_alone(database_url: str, count: int) -> float | None:
    """bench/notifier.py on the same PostgreSQL: the notifier's own CPU ms per reminder."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "dunning_tools.bench.notifier", "--count", str(count)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    found = re.search(r"notifier CPU ([\d.]+) ms per reminder", done.stdout)
    if not found:
        print(f"notifier alone: no figure ({done.returncode}): {done.stderr[-500:]}", flush=True)
        return None
    print(f"notifier alone: {done.stdout.strip().splitlines()[0]}", flush=True)
    return float(found.group(1))


# -- the search ------------------------------------------------------------------------------------
async def bench(stack: Stack, cfg: Config, out_dir: Path = figures.RUN_DIR) -> tuple[dict[str, figures.Figure], dict]:
    started = time.monotonic()
    reference = [v for v in (notifier_alone(stack.database_url, cfg.notifier_count) for _ in range(cfg.rounds)) if v]

    def room(steps: int = 1) -> bool:
        return time.monotonic() - started + steps * cfg.step_seconds() <= cfg.budget

    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        lanes = await pl.setup_lanes(stack, client, cfg.mix, cfg.lead)
        tail = TopicTail(stack.kafka_bootstrap_servers, STAGES_TOPIC)
        await tail.start()
        conn = await asyncpg.connect(stack.database_url)
        ctx = Ctx(stack, client, conn, lanes, tail, cfg, out_dir)
        try:
            steps, best = await search(ctx, room)
            rounds = [best] if best else []
            for k in range(cfg.rounds - 1):
                if not best or not room():
                    break
                spy = profile_targets(cfg.profile, stack, best) if k == cfg.rounds - 2 else None
                print(f"repeat {k + 1} of the best step ({best['offered_reminders_per_s']:g}/s)", flush=True)
                rounds.append(await run_step(ctx, best["offered_reminders_per_s"], spy))
        finally:
            await conn.close()
            await tail.stop()
    return build(cfg, steps, best, rounds, reference)


async def search(ctx: Ctx, room: Callable[[], bool]) -> tuple[list[dict], dict | None]:
    """Step up through the rates until a step fails; then one step between the last good and the failed
    one, or, when not even the first held (a busy machine), one at half its rate."""
    steps: list[dict] = []
    best: dict | None = None
    failed: dict | None = None
    for rate in ctx.cfg.rates:
        if steps and not room():
            break
        steps.append(await run_step(ctx, rate))
        if not passed(steps[-1]):
            failed = steps[-1]
            break
        best = steps[-1]
    if failed is None or not ctx.cfg.refine or not room():
        return steps, best
    bad = failed["offered_reminders_per_s"]
    good = best["offered_reminders_per_s"] if best else None
    if good is None or bad >= 1.5 * good:
        steps.append(await run_step(ctx, round(math.sqrt(good * bad)) if good else round(bad / 2)))
        best = steps[-1] if passed(steps[-1]) else best
    return steps, best


def profile_targets(mode: str, stack: Stack, best: dict) -> list[tuple[str, int]]:
    services = [(sp.name, sp.proc.pid) for sp in stack.procs if sp.proc is not None]
    if mode == "all":
        return services
    if mode == "top2":
        cores = best["cpu_cores"]
        return sorted(services, key=lambda s: -cores.get(s[0], 0))[:2]
    return []


def build(cfg: Config, steps: list[dict], best: dict | None, rounds: list[dict], reference: list[float]):
    rate = best["offered_reminders_per_s"] if best else None
    held = sum(1 for r in rounds if passed(r))
    note = (
        f"offered {rate:g}/s, the highest step with lateness p99 <= 2 s; held in {held} of {len(rounds)} rounds"
        if best
        else "no step sustained lateness p99 <= 2 s"
    )
    figs = {
        "reminders_per_s": figures.Figure(
            "reminders delivered end to end", "/s", [r["achieved_reminders_per_s"] for r in rounds], note
        ),
        "stack_cpu_ms_per_reminder": figures.Figure(
            "stack CPU per delivered reminder",
            "ms",
            [r["cpu_ms_per_reminder"]["total"] for r in rounds if r["cpu_ms_per_reminder"]["total"] is not None],
            "services + PostgreSQL + broker, ingest and payments included, stand-ins not counted; " + note,
        ),
        "notifier_alone_cpu_ms_per_reminder": figures.Figure(
            "the notifier's own CPU per reminder, alone", "ms", reference, "bench/notifier.py, same PostgreSQL"
        ),
        "cancel_p99_ms_under_load": figures.Figure(
            "payment acknowledged -> StagesCancelled p99, under the load",
            "ms",
            [r["cancel_ms"]["p99"] for r in rounds if r["cancel_ms"].get("n")],
            note,
        ),
        "lateness_p99_ms_at_best": figures.Figure(
            "lateness p99 (delivered - due)", "ms", [r["lateness_ms"]["p99"] for r in rounds], note
        ),
    }
    extra = {
        "config": asdict(cfg),
        "best_offered_reminders_per_s": rate,
        "steps": steps,
        "repeats": rounds[1:],
        "lost": sum(s["lost"] for s in steps + rounds[1:]),
        "sent_after_stop": sum(s["sent_after_stop"] for s in steps + rounds[1:]),
        "duplicates": sum(s["duplicates"] for s in steps + rounds[1:]),
        "marginal_cpu_ms_per_reminder": marginal(steps),
    }
    return figs, extra


def marginal(steps: list[dict]) -> float | None:
    """The stack's extra CPU per extra reminder between the two highest steps that held: the cost of
    one more reminder, without the fixed cost (polling, heartbeats) that the per-reminder figure shares out."""
    held = sorted((s for s in steps if passed(s)), key=lambda s: s["achieved_reminders_per_s"])
    if len(held) < 2:
        return None
    a, b = held[-2:]
    more = b["achieved_reminders_per_s"] - a["achieved_reminders_per_s"]
    return round((stack_cores(b) - stack_cores(a)) * 1000 / more, 2) if more > 0 else None


def stack_cores(step: dict) -> float:
    return sum(step["cpu_cores"][g] for g in pl.GROUPS)


def report(figs: dict[str, figures.Figure], extra: dict) -> str:
    lines = [f"{key:<36} {fig.text(1)}  ({fig.note})" for key, fig in figs.items()]
    ref, cpu = figs["notifier_alone_cpu_ms_per_reminder"], figs["stack_cpu_ms_per_reminder"]
    ratio = figures.ratio(cpu, ref)
    if ratio is not None:
        lines.append(f"stack CPU per reminder / notifier alone: {ratio:.1f}x (target <= 2x)")
    if extra.get("marginal_cpu_ms_per_reminder") is not None:
        lines.append(
            f"marginal stack CPU per reminder (between the two best steps): {extra['marginal_cpu_ms_per_reminder']} ms"
        )
    lines.append(f"lost {extra['lost']}, sent after a stop {extra['sent_after_stop']}, twice {extra['duplicates']}")
    return "\n".join(lines)


def config(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two short steps, one round (make bench-quick)")
    parser.add_argument("--rates", help="offered reminders/s per step, e.g. 25,50,100")
    parser.add_argument("--measure", type=float, help="seconds of each step's window")
    parser.add_argument("--profile", choices=["top2", "all", "none"], default="top2")
    args = parser.parse_args(argv)
    cfg = Config(profile=args.profile)
    if mix := os.environ.get("BENCH_PIPELINE_MIX"):
        cfg.mix = pl.parse_mix(mix)
    cfg.budget = float(os.environ.get("BENCH_PIPELINE_BUDGET_SECONDS", cfg.budget))
    if args.quick:
        cfg.rates, cfg.lead, cfg.warm, cfg.measure = [10, 20], 5, 2.0, 10.0
        # Two steps: 10, then 20 if it held or 5 if not (the budget leaves no room for a third).
        cfg.rounds, cfg.notifier_count, cfg.budget = 1, 500, 120.0
    if args.rates:
        cfg.rates = [float(r) for r in args.rates.split(",")]
    if args.measure:
        cfg.measure = args.measure
    return cfg


def main() -> None:
    cfg = config(sys.argv[1:])
    figures.run_on_own_stack("pipeline", lambda stack: bench(stack, cfg), report)


if __name__ == "__main__":
    main()
