"""Where `make bench`'s CPU goes, phase by phase: CPU per process group and a profile of the hot ones.

`Phases.phase(name)` wraps one round of a phase: it reads every stack process's CPU at both ends
(bench/rest.py groups them: the services, postgresql, broker, stand-ins) and adds the difference to
that phase's total over its rounds. With `profile=True` (the bench asks for it in one round of each
main phase, the last, so the other rounds run unobserved) it also samples the processes for half a
second, then attaches py-spy to the two busiest Python processes (`--nonblocking`: the target is
never paused) until the phase ends, writing `<profiles>/<phase>-<process>.json` (speedscope). A
profiler that cannot start or attach is reported and skipped: the figures never depend on it.
"""

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import psutil

from dunning_tools.bench import rest

PYTHON_GROUPS = (*rest.SERVICES, "stand-ins", "reference")
SAMPLE_SECONDS = 0.5


def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy on a few processes until `stop()`; what failed is kept in `problems`."""

    def __init__(self, out_dir: Path, phase: str, rate: int = 100):
        self.out_dir, self.phase, self.rate = out_dir, phase, rate
        self.running: list[tuple[subprocess.Popen, Path]] = []
        self.written: list[str] = []
        self.problems: list[str] = []
        self.lock, self.closed = threading.Lock(), False  # attach (a thread) never outlives stop()

    def attach(self, targets: list[tuple[int, str]]) -> None:
        with self.lock:
            if not self.closed:
                self._attach(targets)

    def _attach(self, targets: list[tuple[int, str]]) -> None:
        exe = py_spy()
        if exe is None:
            self.problems.append("py-spy is not installed (requirements/dev.txt): no profile")
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid, label in targets:
            path = self.out_dir / f"{self.phase}-{label}.json"
            args = [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking"]
            args += ["--format", "speedscope", "-o", str(path)]
            try:
                proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                self.problems.append(f"{label}: py-spy did not start: {exc}")
                continue
            self.running.append((proc, path))

    def stop(self) -> None:
        with self.lock:
            self.closed = True
        for proc, _ in self.running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc, path in self.running:
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if path.exists():
                self.written.append(str(path))
            else:
                why = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                self.problems.append(f"{path.name}: py-spy wrote nothing ({why[0]})")
        self.running.clear()


def _label(pid: int, group: str) -> str:
    if group != "stand-ins":
        return group
    try:
        return "smtp" if "mailserver" in " ".join(psutil.Process(pid).cmdline()) else "providers"
    except psutil.Error:
        return group


def _labels(readings: dict[int, tuple[str, float]]) -> dict[int, str]:
    """A file-name label per process: what it is, numbered when there are several (replicas)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for pid, (group, _) in sorted(readings.items()):
        by_label[_label(pid, group)].append(pid)
    return {
        pid: label if len(pids) == 1 else f"{label}-{i}"
        for label, pids in by_label.items()
        for i, pid in enumerate(pids)
    }


def busiest(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], n: int = 2) -> list[int]:
    """The `n` Python processes (services, stand-ins, references) that used the most CPU in between
    (py-spy reads Python stacks: PostgreSQL's and the broker's CPU is in the per-group figures)."""
    used = [
        (cpu - before.get(pid, (group, 0.0))[1], pid)  # started in between: all of its CPU
        for pid, (group, cpu) in after.items()
        if group in PYTHON_GROUPS
    ]
    return [pid for cpu, pid in sorted(used, reverse=True)[:n] if cpu > 0]


class Phases:
    """CPU per group of each phase, summed over its rounds, and the profiles taken."""

    def __init__(self, profiles_dir: Path, profile: bool = True, rate: int = 100):
        self.profiles_dir, self.profile_enabled, self.rate = profiles_dir, profile, rate
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.rounds: dict[str, int] = defaultdict(int)
        self.profiles: dict[str, list[str]] = {}
        self.problems: list[str] = []

    @contextlib.asynccontextmanager
    async def phase(self, name: str, *, profile: bool = False) -> AsyncIterator[None]:
        before = await asyncio.to_thread(rest.cpu_by_process)
        start = time.monotonic()
        profiler = Profiler(self.profiles_dir, name, self.rate) if profile and self.profile_enabled else None
        attaching = asyncio.create_task(self._attach(profiler, before)) if profiler else None
        try:
            yield
        finally:
            if attaching is not None:
                attaching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await attaching
            after = await asyncio.to_thread(rest.cpu_by_process)
            self.seconds[name] += time.monotonic() - start
            self.rounds[name] += 1
            for group, used in rest.cpu_by_group(before, after).items():
                self.cpu[name][group] += used
            if profiler is not None:
                await asyncio.to_thread(profiler.stop)
                self.profiles[name] = profiler.written
                for problem in profiler.problems:
                    self.problems.append(f"{name}: {problem}")
                    print(f"  profile of {name}: {problem}", flush=True)

    async def _attach(self, profiler: Profiler, before: dict[int, tuple[str, float]]) -> None:
        await asyncio.sleep(SAMPLE_SECONDS)
        after = await asyncio.to_thread(rest.cpu_by_process)
        labels = _labels(after)
        targets = [(pid, labels[pid]) for pid in busiest(before, after)]
        with contextlib.suppress(psutil.Error):
            await asyncio.to_thread(profiler.attach, targets)

    def report(self) -> dict:
        """{phase: {seconds, rounds, cpu_s: {group: s}, pct_of_a_core: {group: %}, total_pct_of_a_core}}."""
        out = {}
        for name, seconds in self.seconds.items():
            cpu = dict(sorted(self.cpu[name].items(), key=lambda kv: -kv[1]))
            out[name] = {
                "seconds": round(seconds, 2),
                "rounds": self.rounds[name],
                "cpu_s": {g: round(s, 2) for g, s in cpu.items()},
                "pct_of_a_core": {g: round(s / seconds * 100, 1) for g, s in cpu.items()} if seconds else {},
                "total_pct_of_a_core": round(sum(cpu.values()) / seconds * 100, 1) if seconds else None,
            }
        return out

    def lines(self) -> list[str]:
        """One printed line per phase: its stack CPU and the groups that used the most of it."""
        out = []
        for name, r in self.report().items():
            groups = ", ".join(f"{g} {p}" for g, p in list(r["pct_of_a_core"].items())[:5])
            out.append(f"  {name:<20} {r['total_pct_of_a_core']:>6} % of a core over {r['seconds']} s ({groups})")
        return out
