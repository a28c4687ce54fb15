"""procrastinate, PgQueuer and the platform on the peers' reminder workload, in one run.

    python -m dunning_tools.bench.peers [--quick] [-n N] [--runs R] [--libs a,b,c]

Starts the embedded PostgreSQL (fsync on, as durable as the peers' server) and the Tansu broker (the
platform's stages travel through it), then runs the vendored harness (bench.py) for each library
and run, alternating the order as the harness does, and saves `.run/bench-peers.json`: one round
per run of each library's execute rate (`<lib>_execute_per_s`), its batch enqueue and cancel rates,
and the checks of every run in `extra`. Defaults: N = 20,000, BENCH_ROUNDS runs, the three
libraries; --quick: N = 5,000, one run, PgQueuer and the platform. DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS point at servers of your own instead.
"""

import argparse
import asyncio
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dunning_tools.bench import figures
from dunning_tools.bench.peers import bench
from dunning_tools.stack.servers import broker, database

LIBS = ("procrastinate", "pgqueuer", "dunning")
QUICK_LIBS = ("pgqueuer", "dunning")
N = 20_000
QUICK_N = 5_000


def server_of(dsn: str) -> str:
    """The server's URL without a database: the harness creates one per library."""
    return urlunsplit(urlsplit(dsn)._replace(path=""))


def harness_args(server: str, n: int, runs: int, libs: list[str], log_dir: str) -> argparse.Namespace:
    # A worker's start-up (imports) on a busy 2-core machine can take longer than the harness's 20 s.
    return bench.parse_args(["--server", server, "-n", str(n), "--runs", str(runs), "--libs", ",".join(libs),
                             "--log-dir", log_dir, "--stall-timeout", "60"])  # fmt: skip


async def run_all(args: argparse.Namespace, libs: list[str]) -> dict[str, list[bench.Result]]:
    """Every run of every library, the order alternating between runs (the harness's main loop)."""
    log_dir = args.log_dir
    print(f"# N={args.n} paid={args.paid_fraction:.0%} runs={args.runs} logs={log_dir}", flush=True)
    for lib in libs:
        print(f"# {lib} workers: {bench.worker_settings(lib, args)}", flush=True)
    print(bench.HEADER, flush=True)
    results: dict[str, list[bench.Result]] = {lib: [] for lib in libs}
    for run_no in range(1, args.runs + 1):
        for lib in libs if run_no % 2 else list(reversed(libs)):
            res = await bench.run_once(lib, args, log_dir, run_no)
            results[lib].append(res)
            print(res.summary(), flush=True)
            print(res.detail(), flush=True)
    if args.runs > 1:
        print(f"# median of {args.runs} runs")
        print(bench.HEADER)
        for lib in libs:
            print(bench.median_line(results[lib]))
            print(bench.median_detail(results[lib]))
    return results


def figures_of(results: dict[str, list[bench.Result]]) -> dict[str, figures.Figure]:
    out: dict[str, figures.Figure] = {}
    for lib, runs in results.items():
        version = f"{lib} {runs[0].version}"
        for key, attr, what in (
            ("execute_per_s", "execute_rate", "executed, first to last sent.sent_at"),
            ("enqueue_per_s", "enqueue_rate", "batch enqueue (client side)"),
            ("cancel_per_s", "cancel_rate", "batch cancel where there is one, else one call per job"),
        ):
            values = [float(getattr(r, attr)) for r in runs]
            out[f"{lib}_{key}"] = figures.Figure(
                f"{version}: {what}", "/s", [v for v in values if v == v], note=f"N={runs[0].n}, one round per run"
            )
    return out


def extra_of(results: dict[str, list[bench.Result]]) -> dict:
    runs = {
        lib: [
            {
                "ok": r.ok,
                "executed": r.executed,
                "expected": r.expected,
                "cancelled": r.cancelled,
                "cancelled_but_sent": r.cancelled_but_sent,
                "duplicates": r.duplicates,
                "runnable_before_workers": r.runnable_before_workers,
                "workers_spawn_to_last_s": r.exec_wall_s,
                "settings": str(r.settings),
                "worker_exit_codes": r.worker_exit_codes,
                "states": r.states,
                "notes": r.notes,
                "detail": r.detail(),
            }
            for r in rs
        ]
        for lib, rs in results.items()
    }
    worst = {
        lib: {
            "executed": sorted({r.executed for r in rs}),
            "expected": rs[0].expected,
            "cancelled_but_sent": max(r.cancelled_but_sent for r in rs),
            "duplicates": max(r.duplicates for r in rs),
            "ok": all(r.ok for r in rs),
        }
        for lib, rs in results.items()
    }
    return {"n": next(iter(results.values()))[0].n, "checks": worst, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"N={QUICK_N:,}, one run, PgQueuer and the platform")
    parser.add_argument("-n", type=int, default=None, help=f"invoices = reminders (default {N:,})")
    parser.add_argument("--runs", type=int, default=None, help="runs of each library (default BENCH_ROUNDS)")
    parser.add_argument("--libs", default=None, help=f"comma-separated, of {','.join(LIBS)}")
    parser.add_argument("--profile", metavar="DIR", help="py-spy on the platform's workers, folded stacks into DIR")
    opts = parser.parse_args()
    n = opts.n or (QUICK_N if opts.quick else N)
    runs = opts.runs or (1 if opts.quick else figures.ROUNDS)
    libs = opts.libs.split(",") if opts.libs else list(QUICK_LIBS if opts.quick else LIBS)
    workdir = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    if opts.profile:
        os.makedirs(opts.profile, exist_ok=True)
        os.environ["PEERS_PROFILE_DIR"] = os.path.abspath(opts.profile)
    with database(workdir, durable=True) as db, broker(workdir) as bootstrap:
        os.environ["PEERS_KAFKA"] = bootstrap  # the platform's workers inherit it
        args = harness_args(server_of(db.dsn), n, runs, libs, str(workdir / "logs"))
        os.makedirs(args.log_dir, exist_ok=True)
        os.environ["PEERS_CLIENT_LOG"] = os.path.join(args.log_dir, "dunning-client.log")
        results = asyncio.run(run_all(args, libs))
    path = figures.save("peers", figures_of(results), extra_of(results))
    ratios = {}
    pgq = figures_of(results).get("pgqueuer_execute_per_s")
    for lib in libs:
        fig = figures_of(results)[f"{lib}_execute_per_s"]
        ratio = figures.ratio(fig, pgq) if pgq else None
        ratios[lib] = ratio
        print(f"{lib}: execute {fig.text()}" + (f" = {ratio:.2f}x PgQueuer" if ratio else ""))
    print(f"saved {path}")
    failed = any(not r.ok for rs in results.values() for r in rs)
    if failed:
        print("CHECK FAILED: " + ", ".join(f"{lib} {[asdict(r.settings) if r.settings else None]}"
                                           for lib, rs in results.items() for r in rs if not r.ok))  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
