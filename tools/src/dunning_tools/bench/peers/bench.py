#!/usr/bin/env python3
"""Payment-reminder workload on two PostgreSQL job queues: procrastinate and PgQueuer.

Vendored from the project's shared peers harness (shared/peers/bench.py, beside the repository);
changed only to register the third contender, the platform itself (peer_dunning.py: LIBS,
load_peer, TUNED, its settings line, and each worker told its index and the worker count).
`python -m dunning_tools.bench.peers` runs the three on the embedded PostgreSQL (__main__.py).

For each library, on its own freshly created database, one run does:

1. schedule N reminder jobs for N distinct invoices, due between
   --window-from and --window-to seconds from the moment they are enqueued
   (default: 1 s in the past to 1.7 s ahead), with the library's own
   scheduled-job feature; the first --single-enqueue jobs one call per job,
   the rest through the library's batch API (--batch-size jobs per call);
2. before any worker runs, "pay" --paid-fraction of the invoices (seeded, the
   same invoices for both libraries) and cancel their pending jobs with the
   library's cancel API: the first --single-cancel one call per job, the rest
   in batches where the library has a batch cancel (else one call per job);
3. start --procs worker processes with --concurrency jobs in flight each; the
   job upserts (invoice_id, stage) into `sent` (UNIQUE, counting deliveries)
   on the same database; execution rate is taken from the first to the last
   `sent.sent_at`;
4. print `library version enqueue/s cancel/s execute/s executed
   cancelled_but_sent duplicates`, plus a detail line.

README.md has the exact commands, the tuning sweeps and the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

LIBS = ("procrastinate", "pgqueuer", "dunning")


def load_peer(name: str) -> Any:
    if name == "procrastinate":
        import peer_procrastinate as mod
    elif name == "pgqueuer":
        import peer_pgqueuer as mod
    elif name == "dunning":
        import peer_dunning as mod
    else:
        raise SystemExit(f"unknown library {name!r}; choose from {', '.join(LIBS)}")
    return mod


def chunks(seq: list[int], size: int) -> list[list[int]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def offset_for(k: int, lo: float, hi: float, steps: int = 10) -> float:
    """Schedule offset (s) for the k-th enqueue call: cycles through [lo, hi)."""
    return lo + (hi - lo) * (k % steps) / steps


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


# Worker settings per library: the best of the sweeps in README.md ("Tuning").
# Any of --procs/--concurrency/--business-pool/--lib-pool/--pgq-batch/--loop
# given on the command line overrides these for every library.
TUNED: dict[str, dict[str, Any]] = {
    "procrastinate": {"procs": 2, "concurrency": 10, "business_pool": 10, "lib_pool": 12},
    "pgqueuer": {"procs": 2, "concurrency": 200, "pgq_batch": 100, "business_pool": 20},
    # the platform: worker 0 the scheduler (firing batch = pgq_batch), worker 1 the notifier's
    # consumer (records per consumer batch = concurrency); see peer_dunning.py
    "dunning": {"procs": 2, "concurrency": 500, "pgq_batch": 2000, "business_pool": 4},
}


@dataclass
class WorkerSettings:
    lib: str
    procs: int
    concurrency: int
    business_pool: int
    lib_pool: int
    pgq_batch: int
    loop: str

    def __str__(self) -> str:
        own = (
            f"lib_pool={self.lib_pool}" if self.lib == "procrastinate" else f"pgq_batch={self.pgq_batch}"
        )
        if self.lib == "dunning":
            return f"procs={self.procs} fire_batch={self.pgq_batch} consumer_batch={self.concurrency} loop=uvloop"
        return (
            f"procs={self.procs} concurrency={self.concurrency} "
            f"business_pool={self.business_pool} {own} loop={self.loop}"
        )


def worker_settings(lib: str, args: argparse.Namespace) -> WorkerSettings:
    tuned = TUNED.get(lib, {})

    def pick(name: str, default: Any) -> Any:
        given = getattr(args, name)
        return given if given is not None else tuned.get(name, default)

    procs = pick("procs", 1)
    concurrency = pick("concurrency", 20)
    business_pool = pick("business_pool", max(1, min(concurrency, 10)))
    lib_pool = pick("lib_pool", business_pool + 2)
    pgq_batch = pick("pgq_batch", max(1, min(10, concurrency // 2)))
    settings = WorkerSettings(lib, procs, concurrency, business_pool, lib_pool, pgq_batch, args.loop)
    if lib == "pgqueuer" and concurrency < 2 * pgq_batch:
        raise SystemExit(
            f"pgqueuer: concurrency ({concurrency}) must be >= 2 * pgq_batch ({pgq_batch}),"
            " PgQueuer's rule for max_concurrent_tasks"
        )
    return settings


@dataclass
class Result:
    lib: str
    version: str
    n: int
    settings: WorkerSettings | None = None
    enqueue_rate: float = float("nan")  # batch API
    enqueue_single_rate: float = float("nan")
    enqueue_single_p50_ms: float = float("nan")
    cancel_rate: float = float("nan")  # batch API where there is one, else single
    cancel_single_rate: float = float("nan")
    cancel_single_p50_ms: float = float("nan")
    cancel_single_p99_ms: float = float("nan")
    cancelled: int = 0
    expected: int = 0
    runnable_before_workers: int = -1
    execute_rate: float = float("nan")
    exec_wall_s: float = float("nan")
    run_s: float = float("nan")
    executed: int = 0
    cancelled_but_sent: int = 0
    duplicates: int = 0
    worker_exit_codes: list[int | None] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.lib} {self.version} {self.enqueue_rate:.0f} {self.cancel_rate:.0f} "
            f"{self.execute_rate:.0f} {self.executed} {self.cancelled_but_sent} {self.duplicates}"
        )

    @property
    def ok(self) -> bool:
        return (
            self.executed == self.expected
            and self.runnable_before_workers == self.expected
            and self.cancelled_but_sent == 0
            and self.duplicates == 0
        )

    def detail(self) -> str:
        return (
            f"#   {self.lib}: {'OK' if self.ok else 'CHECK FAILED'} "
            f"expected={self.expected} cancelled={self.cancelled} "
            f"runnable_before_workers={self.runnable_before_workers} | "
            f"single enqueue {self.enqueue_single_rate:.0f}/s (p50 {self.enqueue_single_p50_ms:.2f} ms) | "
            f"single cancel {self.cancel_single_rate:.0f}/s "
            f"(p50 {self.cancel_single_p50_ms:.2f} ms, p99 {self.cancel_single_p99_ms:.2f} ms) | "
            f"workers spawn->last execution {self.exec_wall_s:.1f} s | whole run {self.run_s:.0f} s | "
            f"workers [{self.settings}] exits {self.worker_exit_codes} | states {self.states}"
            + (f" | notes: {'; '.join(self.notes)}" if self.notes else "")
        )


async def client_phases(peer_mod: Any, args: argparse.Namespace, dsn: str, res: Result) -> None:
    """Schema, enqueue and cancel phases, in this process."""
    peer = peer_mod.Peer(dsn)
    await peer.open()
    try:
        await peer.install()
        await common.create_bench_tables(dsn)

        invoices = list(range(1, args.n + 1))
        job_of: dict[int, int] = {}
        n_single = min(args.single_enqueue, args.n)

        # Phase 1a: one call per job.
        lat: list[float] = []
        t0 = time.perf_counter()
        for k, inv in enumerate(invoices[:n_single]):
            s = time.perf_counter()
            job_of[inv] = await peer.enqueue_one(inv, offset_for(k, args.window_from, args.window_to))
            lat.append(time.perf_counter() - s)
        t1 = time.perf_counter()
        if n_single:
            res.enqueue_single_rate = n_single / (t1 - t0)
            res.enqueue_single_p50_ms = pct(lat, 0.5) * 1000

        # Phase 1b: batch API.
        rest = invoices[n_single:]
        t0 = time.perf_counter()
        for k, chunk in enumerate(chunks(rest, args.batch_size)):
            ids = await peer.enqueue_many(chunk, offset_for(k, args.window_from, args.window_to))
            if len(ids) != len(chunk):
                raise RuntimeError(f"batch enqueue returned {len(ids)} ids for {len(chunk)} jobs")
            job_of.update(zip(chunk, ids))
        t1 = time.perf_counter()
        if rest:
            res.enqueue_rate = len(rest) / (t1 - t0)
        if len(set(job_of.values())) != args.n:
            raise RuntimeError("enqueue did not return N distinct job ids")

        # Phase 2: payments cancel pending reminders.
        paid = random.Random(args.seed).sample(invoices, round(args.n * args.paid_fraction))
        res.cancelled = len(paid)
        res.expected = args.n - len(paid)
        has_batch_cancel = peer.batch_cancel_api is not None
        n_single_cancel = min(args.single_cancel, len(paid)) if has_batch_cancel else len(paid)
        lat = []
        t0 = time.perf_counter()
        for inv in paid[:n_single_cancel]:
            s = time.perf_counter()
            await peer.cancel_one(job_of[inv])
            lat.append(time.perf_counter() - s)
        t1 = time.perf_counter()
        if n_single_cancel:
            res.cancel_single_rate = n_single_cancel / (t1 - t0)
            res.cancel_single_p50_ms = pct(lat, 0.5) * 1000
            res.cancel_single_p99_ms = pct(lat, 0.99) * 1000
        if has_batch_cancel:
            rest_paid = paid[n_single_cancel:]
            t0 = time.perf_counter()
            for chunk in chunks(rest_paid, args.batch_size):
                await peer.cancel_many([job_of[i] for i in chunk])
            t1 = time.perf_counter()
            if rest_paid:
                res.cancel_rate = len(rest_paid) / (t1 - t0)
        else:
            res.cancel_rate = res.cancel_single_rate
            res.notes.append("no batch cancel API: cancel/s is one call per job")

        res.runnable_before_workers = await peer.runnable_jobs()
        if res.runnable_before_workers != res.expected:
            res.notes.append(
                f"runnable jobs before workers {res.runnable_before_workers} != {res.expected}"
            )
        await common.record_paid(dsn, paid)  # untimed; for the final check only
    finally:
        await peer.close()


def spawn_workers(lib: str, dsn: str, ws: WorkerSettings, log_dir: str, tag: str):
    procs = []
    for w in range(ws.procs):
        cmd = [
            sys.executable,
            os.path.join(HERE, "bench.py"),
            "_worker",
            "--lib", lib,
            "--dsn", dsn,
            "--concurrency", str(ws.concurrency),
            "--business-pool", str(ws.business_pool),
            "--lib-pool", str(ws.lib_pool),
            "--pgq-batch", str(ws.pgq_batch),
            "--loop", ws.loop,
            "--worker-index", str(w),
            "--workers", str(ws.procs),
        ]  # fmt: skip
        log = open(os.path.join(log_dir, f"{tag}-worker{w}.log"), "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


async def execute_phase(lib: str, dsn: str, args: argparse.Namespace, res: Result, log_dir: str, tag: str) -> None:
    conn = await asyncpg.connect(dsn)
    spawned_at = time.time()
    assert res.settings is not None
    procs = spawn_workers(lib, dsn, res.settings, log_dir, tag)
    try:
        last_count, last_change = 0, time.monotonic()
        deadline = time.monotonic() + args.exec_timeout
        while True:
            await asyncio.sleep(0.25)
            count = await common.sent_count(conn)
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            if count >= res.expected:
                break
            if any(p.poll() is not None for p, _ in procs):
                res.notes.append("a worker exited early")
                break
            if now - last_change > args.stall_timeout:
                res.notes.append(f"no progress for {args.stall_timeout:.0f} s")
                break
            if now > deadline:
                res.notes.append(f"execution timeout {args.exec_timeout:.0f} s")
                break
        # Let late duplicates or cancelled-but-run jobs show up before stopping.
        await asyncio.sleep(args.grace)
    finally:
        await conn.close()
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, log in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                res.notes.append("worker killed after SIGTERM timeout")
            log.close()
            res.worker_exit_codes.append(p.returncode)

    out = await common.outcome(dsn)
    res.executed = int(out["executed"])
    res.duplicates = int(out["duplicates"])
    res.cancelled_but_sent = int(out["cancelled_but_sent"])
    if res.executed > 1:
        span = float(out["last_at"]) - float(out["first_at"])
        res.execute_rate = (res.executed - 1) / span if span > 0 else float("nan")
        res.exec_wall_s = float(out["last_at"]) - spawned_at


async def run_once(lib: str, args: argparse.Namespace, log_dir: str, run_no: int) -> Result:
    peer_mod = load_peer(lib)
    database = f"peer_{lib}"
    dsn = common.dsn_for(args.server, database)
    started = time.perf_counter()
    await common.recreate_database(common.dsn_for(args.server, args.admin_db), database)
    res = Result(lib=lib, version=peer_mod.VERSION, n=args.n, settings=worker_settings(lib, args))
    await client_phases(peer_mod, args, dsn, res)
    await execute_phase(lib, dsn, args, res, log_dir, f"{lib}-run{run_no}")
    peer = peer_mod.Peer(dsn)
    await peer.open()
    try:
        res.states = await peer.job_states()
    finally:
        await peer.close()
    res.run_s = time.perf_counter() - started
    return res


def median_line(results: list[Result]) -> str:
    r0 = results[0]

    def med(attr: str) -> float:
        vals = [getattr(r, attr) for r in results if getattr(r, attr) == getattr(r, attr)]
        return statistics.median(vals) if vals else float("nan")

    executed = sorted({r.executed for r in results})
    executed_s = str(executed[0]) if len(executed) == 1 else f"{executed[0]}..{executed[-1]}"
    return (
        f"{r0.lib} {r0.version} {med('enqueue_rate'):.0f} {med('cancel_rate'):.0f} "
        f"{med('execute_rate'):.0f} {executed_s} {max(r.cancelled_but_sent for r in results)} "
        f"{max(r.duplicates for r in results)}"
    )


def median_detail(results: list[Result]) -> str:
    def med(attr: str) -> float:
        vals = [getattr(r, attr) for r in results if getattr(r, attr) == getattr(r, attr)]
        return statistics.median(vals) if vals else float("nan")

    return (
        f"#   {results[0].lib} medians over {len(results)} run(s) [{results[0].settings}]: "
        f"single enqueue {med('enqueue_single_rate'):.0f}/s, "
        f"single cancel {med('cancel_single_rate'):.0f}/s "
        f"(p50 {med('cancel_single_p50_ms'):.2f} ms, p99 {med('cancel_single_p99_ms'):.2f} ms), "
        f"workers spawn->last execution {med('exec_wall_s'):.1f} s, "
        f"execute/s per run {[round(r.execute_rate) for r in results]}"
    )


HEADER = "# library version enqueue/s cancel/s execute/s executed cancelled_but_sent duplicates"


async def main_async(args: argparse.Namespace) -> int:
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    for lib in libs:
        load_peer(lib)
        worker_settings(lib, args)  # fail early on bad combinations
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="peers-bench-")
    os.makedirs(log_dir, exist_ok=True)
    print(
        f"# N={args.n} paid={args.paid_fraction:.0%} window=[{args.window_from},{args.window_to}) s "
        f"batch={args.batch_size} single_enqueue={args.single_enqueue} single_cancel={args.single_cancel} "
        f"runs={args.runs} logs={log_dir}",
        flush=True,
    )
    for lib in libs:
        print(f"# {lib} workers: {worker_settings(lib, args)}", flush=True)
    print(HEADER, flush=True)
    all_results: dict[str, list[Result]] = {lib: [] for lib in libs}
    for run_no in range(1, args.runs + 1):
        order = libs if run_no % 2 else list(reversed(libs))  # alternate to spread drift
        for lib in order:
            res = await run_once(lib, args, log_dir, run_no)
            all_results[lib].append(res)
            print(res.summary(), flush=True)
            print(res.detail(), flush=True)
    if args.runs > 1:
        print(f"# median of {args.runs} runs (rates: median; executed: range; "
              "cancelled_but_sent/duplicates: worst run)")
        print(HEADER)
        for lib in libs:
            print(median_line(all_results[lib]))
            print(median_detail(all_results[lib]))
    failed = any(not r.ok for rs in all_results.values() for r in rs)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--libs", default="procrastinate,pgqueuer", help="comma-separated: procrastinate,pgqueuer,dunning")
    p.add_argument("-n", "--n", type=int, default=50_000, help="invoices = reminder jobs (default 50000)")
    p.add_argument("--runs", type=int, default=1, help="runs per library; medians printed when > 1")
    p.add_argument("--server", default=os.environ.get("PEERS_PG", "postgresql://postgres:pg@127.0.0.1:5432"),
                   help="PostgreSQL server URL without database (env PEERS_PG)")
    p.add_argument("--admin-db", default="postgres", help="database to connect to for DROP/CREATE DATABASE")
    p.add_argument("--paid-fraction", type=float, default=0.30)
    p.add_argument("--seed", type=int, default=20240601, help="seed choosing the paid invoices")
    p.add_argument("--window-from", type=float, default=-1.0, help="earliest schedule offset, s from enqueue")
    p.add_argument("--window-to", type=float, default=2.0, help="schedule offsets stay below this, s")
    p.add_argument("--batch-size", type=int, default=1000, help="jobs per batch enqueue / batch cancel call")
    p.add_argument("--single-enqueue", type=int, default=2000, help="jobs enqueued one call each (rest: batch)")
    p.add_argument("--single-cancel", type=int, default=2000,
                   help="cancels one call each where a batch cancel exists (else all are single)")
    p.add_argument("--procs", type=int, default=None,
                   help="worker processes (default: per library, see TUNED)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="jobs in flight per worker process (default: per library)")
    p.add_argument("--business-pool", type=int, default=None,
                   help="the handler's own pool size per process (default: per library)")
    p.add_argument("--lib-pool", type=int, default=None,
                   help="procrastinate connector pool size per process (default: per library)")
    p.add_argument("--pgq-batch", type=int, default=None,
                   help="PgQueuer dequeue batch_size (default: per library)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="worker event loop; auto = what each library's CLI uses "
                        "(procrastinate worker: asyncio; pgq run: uvloop)")
    p.add_argument("--exec-timeout", type=float, default=150.0, help="give up executing after this many s")
    p.add_argument("--stall-timeout", type=float, default=20.0, help="give up after this many s without progress")
    p.add_argument("--grace", type=float, default=1.0, help="s to wait after the last expected execution")
    p.add_argument("--log-dir", default=None, help="worker logs (default: a new temp dir)")
    args = p.parse_args(argv)
    if not args.window_from < args.window_to:
        p.error("--window-from must be below --window-to")
    return args


def worker_entry(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench.py _worker")
    p.add_argument("--lib", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--business-pool", type=int, required=True)
    p.add_argument("--lib-pool", type=int, required=True)
    p.add_argument("--pgq-batch", type=int, required=True)
    p.add_argument("--loop", default="auto")
    p.add_argument("--worker-index", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    load_peer(args.lib).worker_main(args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_entry(sys.argv[2:])
        return
    args = parse_args(sys.argv[1:])
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
