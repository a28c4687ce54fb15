"""A tenant's unsaved template is checked and rendered in a child process, bounded in time and memory.

Jinja2's sandbox keeps a template from reaching Python's internals, not from spending: `{% set s = s ~ s %}`
written twenty times, nested loops, chained `replace` filters grow exponentially, and the API process
would hang or run out of memory rendering them. So validation (tenant_templates.validate renders against
the samples) and the preview of unsaved parts run in a forked child with an address-space limit
(RLIMIT_AS: what it has at the fork plus MEMORY_BYTES) and a wall-clock limit (TIMEOUT_SECONDS), killed
past it; such a template is refused with a 422. A saved template rendered within these bounds against
the rich sample, so at send time, on data of the same shape, it renders in-process.

Fork, not spawn: the child starts in milliseconds with the renderer already built (nothing pickled in),
and touches nothing but the renderer (no logging, no database) before `os._exit`.
"""

import asyncio
import multiprocessing
import os
import resource
from collections.abc import Callable
from typing import Any

from dunning_notifier.tenant_templates import TemplateInvalid

TIMEOUT_SECONDS = 3.0
MEMORY_BYTES = 256 * 1024 * 1024


class TemplateTooCostly(TemplateInvalid):
    """The template spent more time or memory than a reminder may."""


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(conn: Any, part: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        limit = _address_space() + MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        conn.send(("ok", fn(*args)))
    except TemplateInvalid as exc:
        conn.send(("invalid", exc.errors))
    except MemoryError:
        conn.send(("memory", None))
    except RecursionError:
        conn.send(("invalid", [{"field": part, "message": f"{part}: nested too deeply", "code": "too_costly"}]))
    except BaseException as exc:  # report, never raise in a forked child: it must reach os._exit
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
        os._exit(0)


async def run_bounded(part: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a forked child: its result (picklable), TemplateInvalid as it raised it,
    TemplateTooCostly (naming `part`, e.g. "parts") past the time or memory limit; RuntimeError else."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, part, fn, args), daemon=True)
    process.start()
    child.close()
    try:
        if not await asyncio.to_thread(parent.poll, TIMEOUT_SECONDS):
            raise _too_costly(part, f"took more than {TIMEOUT_SECONDS:g} s to render")
        try:
            kind, value = parent.recv()
        except EOFError:
            kind, value = "memory", None
    finally:
        if process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, 5)
        parent.close()
    if kind == "ok":
        return value
    if kind == "invalid":
        raise TemplateInvalid(value)
    if kind == "memory":
        raise _too_costly(part, f"needs more than {MEMORY_BYTES // 2**20} MiB to render")
    raise RuntimeError(f"the template check failed: {value}")


def _too_costly(part: str, why: str) -> TemplateTooCostly:
    return TemplateTooCostly([{"field": part, "message": f"{part}: {why}", "code": "too_costly"}])
