"""`python -m dunning_tools.bench` (`make bench`): every sub-bench in one run, then issue 13's table.

Each sub-bench runs in a process of its own, one after the other (none shares the machine with
another), and saves its figures to `<BENCH_RUN_DIR>/bench-<name>.json` (bench/figures.py); the figures
of an earlier run are moved to `previous/` first, so the table compares figures of this run only.
Then `bench.table` prints each figure beside its reference and, with `--readme`, rewrites the
README's generated block.

    python -m dunning_tools.bench [--quick] [--only system,peers] [--readme]

`--quick` (`make bench-quick`): the whole-stack phases only, smaller, one round (~2 minutes), into
`.run/quick/`. `--only`: those sub-benches only; the other files of the last run are kept.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dunning_tools.bench import figures, table

BENCHES = {
    "system": "the whole stack: ingest, cancellations, firing, delivery, at rest; policies and statements",
    "pipeline": "the whole pipeline stepped up to its highest sustained rate, CPU per reminder",
    "peers": "the platform beside procrastinate and PgQueuer on the peers' reminder workload",
    "burst": "a Monday 09:00: 100,000 reminders due in the same minute for 5,000 customers",
    "scale": "10 million pending timers against 10,000",
}


def run(name: str, quick: bool) -> int:
    print(f"\n=== {name}: {BENCHES[name]} (python -m dunning_tools.bench.{name}) ===", flush=True)
    started = time.monotonic()
    argv = [sys.executable, "-m", f"dunning_tools.bench.{name}", *(["--quick"] if quick else [])]
    code = subprocess.run(argv, check=False).returncode
    print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s ===", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the ~2-minute subset (make bench-quick)")
    parser.add_argument("--only", help="comma-separated sub-benches: " + ", ".join(BENCHES))
    parser.add_argument("--readme", type=Path, help="rewrite this README's generated block with the table")
    args = parser.parse_args()
    if args.quick and "BENCH_RUN_DIR" not in os.environ:
        os.environ["BENCH_RUN_DIR"] = str(figures.RUN_DIR / "quick")  # the sub-benches' processes read it
    run_dir = Path(os.environ.get("BENCH_RUN_DIR", figures.RUN_DIR))
    names = args.only.split(",") if args.only else (["system"] if args.quick else list(BENCHES))
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"--only: unknown sub-bench(es) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not args.only:  # a whole run: the last run's figures must not mix with this one's
        previous = run_dir / "previous"
        previous.mkdir(exist_ok=True)
        for path in run_dir.glob("bench-*.json"):
            shutil.move(path, previous / path.name)
    failed = [name for name in names if run(name, args.quick)]
    table.main(["--run-dir", str(run_dir), *(["--readme", str(args.readme)] if args.readme else [])])
    if failed:
        print(f"sub-benches that failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
