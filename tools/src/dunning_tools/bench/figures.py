"""One figure of `make bench`: the median of several rounds with its spread, and where it goes.

Every sub-bench measures a figure in rounds (`rounds(fn, n)`), keeps it as a `Figure` and saves its
figures with `save(name, figures)` to `.run/bench-<name>.json`; the table of issue 13 (each figure
beside its reference from the same run, and the ratio) is built from those files
(`load_all()`), so the README's performance section is generated, never written by hand.
"""

import asyncio
import json
import os
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dunning_tools.stack.system import Ports, Stack

RUN_DIR = Path(os.environ.get("BENCH_RUN_DIR", ".run"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))


@dataclass
class Figure:
    """A measured figure: each round's value, the median and the spread (min-max) of them."""

    name: str
    unit: str
    rounds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.rounds), max(self.rounds)) if self.rounds else None

    def as_dict(self) -> dict:
        return {**asdict(self), "median": self.median, "spread": self.spread}

    @classmethod
    def from_dict(cls, d: dict) -> "Figure":
        return cls(d["name"], d["unit"], list(d.get("rounds", [])), d.get("note", ""))

    def text(self, digits: int = 0) -> str:
        """'1,234 /s (1,100-1,300 over 3)' or 'none' when nothing was measured."""
        if self.median is None or self.spread is None:
            return "none"
        fmt = f"{{:,.{digits}f}}"
        lo, hi = self.spread
        spread = f" ({fmt.format(lo)}-{fmt.format(hi)} over {len(self.rounds)})" if len(self.rounds) > 1 else ""
        return f"{fmt.format(self.median)} {self.unit}{spread}"


def ratio(figure: Figure, reference: Figure) -> float | None:
    """figure / reference on their medians (None when either is missing or the reference is 0)."""
    if figure.median is None or not reference.median:
        return None
    return figure.median / reference.median


async def rounds(name: str, unit: str, measure: Callable[[], Awaitable[float]], n: int = ROUNDS) -> Figure:
    """Measure `n` times (each call sets itself up before it starts its clock) and keep every value."""
    fig = Figure(name, unit)
    for _ in range(n):
        fig.rounds.append(float(await measure()))
    return fig


def save(bench: str, figures: dict[str, Figure], extra: dict | None = None) -> Path:
    """Write one sub-bench's figures (and anything else it reports) to .run/bench-<bench>.json."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = RUN_DIR / f"bench-{bench}.json"
    body = {"figures": {k: f.as_dict() for k, f in figures.items()}, **(extra or {})}
    path.write_text(json.dumps(body, indent=2, default=str))
    return path


def run_on_own_stack(
    bench: str,
    measure: Callable[[Any], Coroutine[Any, Any, tuple[dict[str, Figure], dict]]],
    report: Callable[[dict[str, Figure], dict], str],
    banner: str = "",
) -> None:
    """A sub-bench's main: its own stack (fsync on) in a fresh directory, `measure(stack)` on it, the
    figures saved (`save`) and the report printed."""
    workdir = Path(tempfile.mkdtemp(prefix=f"dunning-{bench}-"))
    stack = Stack(workdir, Ports.free(), durable=True)
    print(f"starting the stack in {workdir}{banner} ...", flush=True)
    try:
        stack.start_infrastructure()
        stack.start_services()
        figs, extra = asyncio.run(measure(stack))
    finally:
        stack.stop()
    path = save(bench, figs, extra)
    print(report(figs, extra), flush=True)
    print(f"saved {path}", flush=True)


def load_all(run_dir: Path = RUN_DIR) -> dict[str, Figure]:
    """Every figure saved by the sub-benches, keyed `<bench>.<figure>`."""
    out: dict[str, Figure] = {}
    for path in sorted(run_dir.glob("bench-*.json")):
        bench = path.stem.removeprefix("bench-")
        for key, d in json.loads(path.read_text()).get("figures", {}).items():
            out[f"{bench}.{key}"] = Figure.from_dict(d)
    return out
