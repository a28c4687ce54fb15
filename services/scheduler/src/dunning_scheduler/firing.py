"""The firing loop: due timers become StageEscalated events, in batches, exactly once.

Each tick claims up to `batch_size` due timers (`FOR UPDATE SKIP LOCKED`, so several replicas
share the work and never fire a timer twice), marks them fired and writes one StageEscalated per
timer to the outbox, all in one transaction; the outbox relay publishes them. A full batch means
more are due: go again at once. Otherwise sleep until the next timer is due or `poll_seconds`,
whichever is sooner; a NOTIFY on `scheduler_timers_<schema>` (sent when a timer is planned due
now, and when a payments watermark arrives) wakes the loop early.

The payments gate (repository._FIRE_DUE) may hold due timers back: then the loop waits for the next
watermark (its NOTIFY) or `poll_seconds`, and prunes superseded watermark statements now and then.
"""

import asyncio
import contextlib
import time

import asyncpg
from dunning import outbox
from dunning.clock import utcnow
from dunning.consumer import INFRA_ERRORS
from dunning.logging import get_logger

from dunning_scheduler import messages, repository
from dunning_scheduler.handlers import TIMERS_CHANNEL

log = get_logger(__name__)


class FiringLoop:
    def __init__(self, pool: asyncpg.Pool, schema: str, *, batch_size: int = 2000, poll_seconds: float = 0.1,
                 name: str = "firing", gated: bool = True, payments_topic: str = repository.PAYMENTS_TOPIC):
        self.pool = pool
        self.schema = schema
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.name = name
        self.gated = gated
        self.payments_topic = payments_topic
        self._last_prune = 0.0
        self.paused = False
        self.fired_total = 0  # counters for metrics and the bench
        self.batches = 0
        self.errors = 0
        self.last_fired_at: float | None = None  # time.monotonic() of the last non-empty batch
        self._wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def fire_once(self) -> int:
        """Fire one batch of due timers; returns how many fired."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await repository.fire_due(conn, self.batch_size, gated=self.gated,
                                              payments_topic=self.payments_topic)
            if rows:
                await outbox.add_many(conn, [messages.stage_escalated(r) for r in rows])
        if rows:
            self.fired_total += len(rows)
            self.batches += 1
            self.last_fired_at = time.monotonic()
            log.debug("scheduler.stages.fired", count=len(rows))
        return len(rows)

    async def _sleep_seconds(self) -> float:
        async with self.pool.acquire() as conn:
            next_due = await repository.next_due_at(conn)
            if self.gated and time.monotonic() - self._last_prune > 30:
                self._last_prune = time.monotonic()
                await repository.prune_watermarks(conn)
        if next_due is None:
            return self.poll_seconds
        wait = (next_due - utcnow()).total_seconds()
        if wait <= 0:  # due but held by the gate: the next watermark's NOTIFY wakes us
            return self.poll_seconds
        return min(self.poll_seconds, wait)

    async def run(self) -> None:
        listener = await self.pool.acquire()
        channel = f"{TIMERS_CHANNEL}_{self.schema}"
        try:
            await listener.add_listener(channel, self._on_notify)
            log.info("scheduler.firing.started", loop=self.name, batch_size=self.batch_size)
            backoff = 0.1
            while not self._stopping:
                self._wake.clear()
                try:
                    fired = 0 if self.paused else await self.fire_once()
                    if fired >= self.batch_size:
                        continue
                    delay = self.poll_seconds if self.paused else await self._sleep_seconds()
                    backoff = 0.1
                except INFRA_ERRORS as exc:
                    self.errors += 1
                    log.warning("scheduler.firing.error", loop=self.name, error=repr(exc), retry_in=backoff)
                    delay, backoff = backoff, min(backoff * 2, 5.0)
                except Exception:  # noqa: BLE001 - the batch rolled back; it is retried, never lost
                    self.errors += 1
                    log.exception("scheduler.firing.failed", loop=self.name, retry_in=backoff)
                    delay, backoff = backoff, min(backoff * 2, 5.0)
                if delay > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(channel, self._on_notify)
            await self.pool.release(listener)
            log.info("scheduler.firing.stopped", loop=self.name, fired_total=self.fired_total)

    def _on_notify(self, *_args) -> None:
        self._wake.set()
