"""When the dispatcher's claim loop and the notice workers look for due work again.

Written deliveries and notices wake them at the writer's commit: a statement trigger on each table
NOTIFYs `notifier_due` (migration 20261202700000). With nothing claimable they sleep until the next
pending row falls due (a retry's or a notice's time, read from the partial `*_due` index), at most
`idle_poll_seconds` (the fallback: a notification lost while the listening connection was down),
at least `poll_seconds`. At rest that is a few queries a second instead of sixty.
"""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from dunning.listener import Listener

CHANNEL = "notifier_due"


class DueWakeup:
    def __init__(self, pool: asyncpg.Pool, min_seconds: float, max_seconds: float):
        self.pool = pool
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self._event = asyncio.Event()
        # one listener for the claim loop and the notice workers; a lost connection wakes them too
        self._listener = Listener(pool, CHANNEL, on_notify=self._notified, on_lost=self._notified)
        self.wakeups = 0

    def token(self) -> asyncio.Event:
        """Taken before looking for work: a notification that comes meanwhile ends the next sleep."""
        return self._event

    def poke(self) -> None:
        """This process recorded an outcome (a retry back to pending, a lease let go): look again now.
        The NOTIFY trigger covers inserts only; without this, a retry due soon would wait up to
        `max_seconds`."""
        self._notified()

    def _notified(self, *_args) -> None:
        self.wakeups += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def sleep(
        self,
        token: asyncio.Event,
        stopping: asyncio.Event,
        next_due: Callable[[], Awaitable[float | None]],
    ) -> None:
        """Until a notification after `token`, `stopping`, or the next due row (`next_due`: seconds
        from now, None if none), within [min_seconds, max_seconds]."""
        if await self._listener.ensure():
            self._notified()  # anything written while nobody listened: look once more
        try:
            due_in = await next_due()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            due_in = self.min_seconds
        seconds = self.max_seconds if due_in is None else min(max(due_in, self.min_seconds), self.max_seconds)
        if not self._listener.listening:  # not listening: poll as before
            seconds = self.min_seconds
        waits = [asyncio.ensure_future(token.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def close(self) -> None:
        await self._listener.close()
