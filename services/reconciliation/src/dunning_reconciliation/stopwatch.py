"""Where a statement import's time goes (the bench prints it): `timing(into)` collects, for the
code it wraps, the seconds spent in each `step(name)`; with no `timing` active a step costs a
context-variable read. A step's time excludes the steps nested in it (each counted once)."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

_TIMINGS: ContextVar[dict[str, float] | None] = ContextVar("reconciliation_timings", default=None)
_NESTED: ContextVar[list[float] | None] = ContextVar("reconciliation_timings_nested", default=None)


@contextmanager
def timing(into: dict[str, float]) -> Iterator[dict[str, float]]:
    """Add the seconds of every step run inside this block to `into` (by step name)."""
    token = _TIMINGS.set(into)
    try:
        yield into
    finally:
        _TIMINGS.reset(token)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time the block as `name` (less its nested steps) when a `timing` block is active."""
    into = _TIMINGS.get()
    if into is None:
        yield
        return
    outer, nested = _NESTED.get(), [0.0]
    token = _NESTED.set(nested)
    start = perf_counter()
    try:
        yield
    finally:
        spent = perf_counter() - start
        _NESTED.reset(token)
        into[name] = into.get(name, 0.0) + spent - nested[0]
        if outer is not None:
            outer[0] += spent
