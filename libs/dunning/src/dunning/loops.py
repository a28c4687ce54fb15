"""The base of every background worker: a loop is one small step, repeated until stopped.

A subclass writes `step()` (claim and do one unit of work; return how long to wait before the next:
0 = go again at once, None = the idle interval) and the base does the rest, the same way for the
outbox relay, the firing loop, the watermark publisher and housekeeping (arroyo's habit: the policy
around the work is data, not scattered code):

- stop: `stop()` stops taking work; the step in flight finishes (it is never cancelled), then
  `drain()` runs once (hand back or flush what is held) and `run()` returns. The runtime calls
  `stop()` on SIGTERM and awaits `run()`.
- wake: `wake()` (or a NOTIFY on the loop's LISTEN channel) ends the wait early; a wake during a step
  is kept, so the next wait is skipped. A LISTEN connection lost (PostgreSQL restarted) wakes the
  loop too, and it listens again on a new one before its next wait (a step meanwhile: what was
  notified while nobody listened is not missed).
- backoff: a step that raises is logged and retried after an exponential delay with jitter
  (`Backoff`); the first success resets it. Nothing a step raises stops the loop.
- pause: `paused` skips steps (tests and operators hold a loop without stopping it).

`Housekeeping` is the one periodic worker every service runs: purge the inbox past the broker's
retention, plus the service's own chores (ingest forgets old Idempotency-Keys).
"""

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from dunning import inbox
from dunning.listener import Listener
from dunning.logging import get_logger

log = get_logger(__name__)


@dataclass
class Backoff:
    """Exponential delays with jitter: attempt n waits about initial * factor**(n-1), at most `maximum`,
    spread by +-`jitter` (a fraction) so replicas that failed together do not retry together."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def next(self) -> float:
        """The delay before the next attempt, counting one more failure."""
        self.failures += 1
        low, high = self.bounds(self.failures)
        return low + self.rng.random() * (high - low)

    def bounds(self, failures: int) -> tuple[float, float]:
        """The range of the delay after `failures` consecutive failures."""
        base = min(self.initial * self.factor ** max(failures - 1, 0), self.maximum)
        return base * (1 - self.jitter), base * (1 + self.jitter)

    def reset(self) -> None:
        self.failures = 0


class Loop:
    """A background worker repeating `step()`; see the module docstring for stop, wake and backoff."""

    name = "loop"
    error_event = "loop.error"  # the log event of a failed step (dotted, per worker)

    def __init__(
        self, *, idle_seconds: float, backoff: Backoff | None = None, listen: tuple[asyncpg.Pool, str] | None = None
    ):
        self.idle_seconds = idle_seconds
        self.backoff = backoff or Backoff()
        self.listen = listen  # (pool, channel): a NOTIFY on the channel wakes the loop
        self.paused = False
        self.steps = 0
        self.errors = 0
        self._wake = asyncio.Event()
        self._stopping = False

    # -- what a worker writes ------------------------------------------------------------------

    async def step(self) -> float | None:
        """One unit of work; returns the seconds to wait before the next (0: at once, None: idle)."""
        raise NotImplementedError

    async def setup(self) -> None:
        """Before the first step."""

    async def drain(self) -> None:
        """After stop(), once the last step has finished: flush or hand back what is held."""

    async def teardown(self) -> None:
        """Always, last (also when the task is cancelled): release what setup or steps hold."""

    def on_error(self, exc: Exception, retry_in: float) -> None:
        log.warning(self.error_event, loop=self.name, error=repr(exc), retry_in=round(retry_in, 3))

    # -- the loop ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def wake(self, *_args) -> None:
        """End the current wait early (also a LISTEN callback: it takes and ignores its arguments)."""
        self._wake.set()

    async def run(self) -> None:
        listener = None if self.listen is None else Listener(*self.listen, on_notify=self.wake, on_lost=self.wake)
        try:
            await self.setup()
            if listener is not None:
                await listener.ensure()
            while not self._stopping:
                self._wake.clear()  # before the step: a wake that arrives during it is kept
                delay = await self._step_once()
                if delay > 0 and not self._stopping and not await self._listening_again(listener):
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
            await self.drain()
        finally:
            if listener is not None:
                await listener.close()
            await self.teardown()

    async def _listening_again(self, listener: Listener | None) -> bool:
        """True if the LISTEN connection was lost and has just been replaced: step at once, for what
        was notified meanwhile (a failed replacement waits as a poll does, and tries again)."""
        if listener is None or not await listener.ensure():
            return False
        log.info("loop.listening_again", loop=self.name, channel=listener.channel)
        return True

    async def _step_once(self) -> float:
        if self.paused:
            return self.idle_seconds
        try:
            delay = await self.step()
        except Exception as exc:
            self.errors += 1
            retry_in = self.backoff.next()
            self.on_error(exc, retry_in)
            return retry_in
        self.steps += 1
        self.backoff.reset()
        return self.idle_seconds if delay is None else delay


Chore = Callable[[], Awaitable[int]]


def inbox_purge(pool: asyncpg.Pool, retention_days: int) -> Chore:
    """Forget inbox ids older than the topics' retention (they can no longer be redelivered)."""

    async def purge_inbox() -> int:
        async with pool.acquire() as conn:
            return await inbox.purge(conn, retention_days)

    return purge_inbox


class Housekeeping(Loop):
    """Every service's periodic chores, each `(name, chore)`: a chore returns how many rows it removed.
    The inbox purge is always the first; one failing chore does not keep the others from running."""

    name = "housekeeping"
    error_event = "housekeeping.failed"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        interval_seconds: float = 600.0,
        inbox_retention_days: int = 14,
        chores: list[tuple[str, Chore]] | None = None,
    ):
        super().__init__(
            idle_seconds=interval_seconds, backoff=Backoff(initial=min(5.0, interval_seconds), maximum=interval_seconds)
        )
        self.pool = pool
        self.chores: list[tuple[str, Chore]] = [("inbox", inbox_purge(pool, inbox_retention_days)), *(chores or [])]

    async def step(self) -> float | None:
        failed: list[str] = []
        purged: dict[str, int] = {}
        for name, chore in self.chores:
            try:
                purged[name] = await chore()
            except Exception as exc:
                log.warning("housekeeping.chore.failed", chore=name, error=repr(exc))
                failed.append(name)
        if any(purged.values()):
            log.info("housekeeping.purged", **{name: rows for name, rows in purged.items() if rows})
        if failed:
            raise RuntimeError(f"housekeeping chores failed: {', '.join(failed)}")
        return None
