"""A LISTEN (on one channel or several) on a pool connection of its own, taken again when that
connection is lost.

asyncpg's pool takes a terminated connection back (PostgreSQL restarted, a failover) and refuses
every call on it afterwards, so the loss is learnt from the connection's termination callback
(`on_lost`), and `ensure()` listens again on a new connection. Used by every `dunning.loops.Loop`
with a channel, by the notifier's `due_wakeup` and by the consumers' record hints (`dunning.naps`).
"""

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import asyncpg

from dunning.logging import get_logger

log = get_logger(__name__)
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Listener:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channel: str | Sequence[str],
        on_notify: Callable[..., None],
        on_lost: Callable[[], None],
    ):
        self.pool = pool
        self.channels = (channel,) if isinstance(channel, str) else tuple(channel)
        self.channel = ", ".join(self.channels)  # for the logs
        self.on_notify, self.on_lost = on_notify, on_lost
        self._conn: asyncpg.Connection | None = None
        self._lost = False
        self._lock = asyncio.Lock()  # several tasks may ensure at once (the notifier's workers)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._lost

    async def ensure(self) -> bool:
        """Listen unless listening already; True if it has just started (again): what was notified
        while nobody listened is for the caller to look at. A failure is logged: not listening yet."""
        if self.listening:
            return False
        async with self._lock:
            if self.listening:
                return False
            await self.close()
            try:
                conn = await self.pool.acquire()
            except _ERRORS as exc:
                log.warning("listener.failed", channel=self.channel, error=repr(exc))
                return False
            try:
                for channel in self.channels:
                    await conn.add_listener(channel, self.on_notify)
            except _ERRORS as exc:
                log.warning("listener.failed", channel=self.channel, error=repr(exc))
                with contextlib.suppress(Exception):
                    await self.pool.release(conn)
                return False
            conn.add_termination_listener(self._terminated)
            self._conn, self._lost = conn, False
            return True

    def _terminated(self, *_args) -> None:
        self._lost = True
        self.on_lost()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a lost one: asyncpg refuses these at once, no matter
            conn.remove_termination_listener(self._terminated)
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await conn.remove_listener(channel, self.on_notify)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)
