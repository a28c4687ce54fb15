"""When the dispatcher's claim loop and the notice workers look for due work again.

Written deliveries and notices wake them at the writer's commit: a statement trigger on each table
NOTIFYs `notifier_due` (migration 20261202700000). With nothing claimable they sleep until the next
pending row falls due (a retry's or a notice's time, read from the partial `*_due` index), at most
`idle_poll_seconds` (the fallback: a notification lost while the listening connection was down),
at least `poll_seconds`. At rest that is a few queries a second instead of sixty.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from dunning.logging import get_logger

log = get_logger(__name__)
CHANNEL = "notifier_due"


class DueWakeup:
    def __init__(self, pool: asyncpg.Pool, min_seconds: float, max_seconds: float):
        self.pool = pool
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self._event = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._listener_lost = False
        self._lock = asyncio.Lock()  # the claim loop and the notice workers share one listener
        self.wakeups = 0

    def token(self) -> asyncio.Event:
        """Taken before looking for work: a notification that comes meanwhile ends the next sleep."""
        return self._event

    def _notified(self, *_args) -> None:
        self.wakeups += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _lost(self, *_args) -> None:
        """The LISTEN connection was lost (asyncpg's pool has taken it back): listen again, and look."""
        self._listener_lost = True
        self._notified()

    async def _listening(self) -> None:
        """LISTEN on a connection of its own, again if that connection was lost (PostgreSQL restarted)."""
        if self._listener is not None and not self._listener_lost:
            return
        async with self._lock:
            if self._listener is None or self._listener_lost:
                await self._listen()

    async def _listen(self) -> None:
        await self.close()
        try:
            conn = await self.pool.acquire()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("notifier.due_wakeup.listen_failed", error=repr(exc))
            return
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("notifier.due_wakeup.listen_failed", error=repr(exc))
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
            return
        conn.add_termination_listener(self._lost)
        self._listener, self._listener_lost = conn, False
        self._notified()  # anything written while nobody listened: look once more

    async def sleep(
        self,
        token: asyncio.Event,
        stopping: asyncio.Event,
        next_due: Callable[[], Awaitable[float | None]],
    ) -> None:
        """Until a notification after `token`, `stopping`, or the next due row (`next_due`: seconds
        from now, None if none), within [min_seconds, max_seconds]."""
        await self._listening()
        try:
            due_in = await next_due()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            due_in = self.min_seconds
        seconds = self.max_seconds if due_in is None else min(max(due_in, self.min_seconds), self.max_seconds)
        if self._listener is None:  # not listening: poll as before
            seconds = self.min_seconds
        waits = [asyncio.ensure_future(token.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def close(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a lost one: asyncpg refuses these at once, no matter
            conn.remove_termination_listener(self._lost)
        with contextlib.suppress(Exception):
            await conn.remove_listener(CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
