"""The stack's own cost, whatever the load: CPU while nothing happens, and each service's memory.

Every process the bench started (its children, recursively: services, PostgreSQL and its backends,
the broker and its object store, the SMTP server and provider stand-ins) is grouped by what it is;
CPU is user + system seconds over a window, as a share of one core; memory is resident set size
(RSS) per service process, the largest replica. Issue 13's targets: at rest <= 3 % of one core for
the whole stack, RSS <= 150 MB per service.
"""

import os
import re
import time
from collections import defaultdict

import psutil

SERVICE = re.compile(r"-m (dunning_\w+)")
GROUPS = {
    "dunning_ingest": "invoice-ingest",
    "dunning_scheduler": "scheduler",
    "dunning_notifier": "notifier",
    "dunning_reconciliation": "reconciliation",
}
SERVICES = tuple(GROUPS.values())


def group_of(cmdline: list[str]) -> str:
    """What a process is, from its command line."""
    text = " ".join(cmdline)
    if "postgres" in text:
        return "postgresql"
    if "tansu" in text or "stack.objectstore" in text:
        return "broker"  # Tansu and its local object store
    if "stack.mailserver" in text or "stack.providers" in text:
        return "stand-ins"  # the SMTP server, the SMS / print-and-mail / webhook stand-ins
    if "py-spy" in text:
        return "profiler"  # the bench's own sampling profiler (bench/phases.py)
    if "dunning_tools.bench" in text:
        return "reference"  # a reference the bench measures beside the stack (bench/bare_api.py)
    found = SERVICE.search(text)
    return GROUPS.get(found.group(1), found.group(1)) if found else "other"


def stack_processes(root: int | None = None) -> dict[int, psutil.Process]:
    """The processes under `root` (default: this one), not `root` itself."""
    try:
        return {p.pid: p for p in psutil.Process(root or os.getpid()).children(recursive=True)}
    except psutil.Error:
        return {}


def _cpu(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


def cpu_at_rest(seconds: float = 20.0, root: int | None = None) -> dict:
    """CPU of each group over `seconds` (processes alive at both ends), in % of one core, and the total."""
    procs = stack_processes(root)
    before = {pid: _cpu(p) for pid, p in procs.items()}
    time.sleep(seconds)
    share: dict[str, float] = defaultdict(float)
    for pid, p in procs.items():
        after = _cpu(p)
        if after is None or before[pid] is None:
            continue
        try:
            share[group_of(p.cmdline())] += (after - before[pid]) / seconds * 100  # type: ignore[operator]
        except psutil.Error:
            continue
    by_group = {k: round(v, 2) for k, v in sorted(share.items(), key=lambda kv: -kv[1])}
    return {"seconds": seconds, "total_pct_of_a_core": round(sum(share.values()), 2), "by_group_pct": by_group}


def cpu_by_process(root: int | None = None) -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far) of every process under `root` (default: this one)."""
    out = {}
    for pid, p in stack_processes(root).items():
        try:
            group = group_of(p.cmdline())
        except psutil.Error:
            continue
        cpu = _cpu(p)
        if cpu is not None:
            out[pid] = (group, cpu)
    return out


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds of each group between two `cpu_by_process` readings: a process started in between
    counts whole (its start-up included), one that exited in between is not counted."""
    used: dict[str, float] = defaultdict(float)
    for pid, (group, cpu) in after.items():
        used[group] += max(0.0, cpu - before[pid][1]) if pid in before else cpu
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def rss_by_service(root: int | None = None) -> dict[str, float]:
    """The largest RSS (MB) of each service's processes."""
    rss: dict[str, float] = {}
    for p in stack_processes(root).values():
        try:
            group, mb = group_of(p.cmdline()), p.memory_info().rss / 2**20
        except psutil.Error:
            continue
        if group in SERVICES:
            rss[group] = round(max(rss.get(group, 0.0), mb), 1)
    return dict(sorted(rss.items()))


def report_at_rest(rest: dict) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in rest["by_group_pct"].items())
    return (
        f"stack CPU at rest          {rest['total_pct_of_a_core']:>8} % of one core over {rest['seconds']:g} s"
        f"  (target <= 3 %; {parts})"
    )


def report_rss(when: str, rss: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in rss.items())
    return f"RSS per service, {when:<9} {max(rss.values(), default=0):>8} MB at most  (target <= 150 MB; {parts})"
