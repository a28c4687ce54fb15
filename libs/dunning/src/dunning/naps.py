"""An idle consumer's naps: paused until a hint says records were published on one of its topics.

A consumer with nothing to read asks the broker again and again; Tansu, the local broker, does not
answer a waiting fetch when records arrive (a Kafka broker does), so a long wait delays the first
record after a quiet spell, and a short one keeps the broker and the consumer busy at rest. Every
publisher here also shares the consumers' PostgreSQL: after the broker acknowledged records, it
sends `NOTIFY "records:<topic>"` (the outbox relay in the statement that deletes them, the gate's
heartbeats right after sending: `hint`). So after a quiet spell a consumer pauses its partitions and
waits for a hint on its topics (or `nap_seconds`, for records nobody hinted: another database, a
hand-made producer), then fetches at once.

Nothing is lost either way: a missed hint costs at most one nap of lateness, never a record, since
paused partitions keep their positions. A hint that comes while the consumer is awake may race a
fetch already in flight (sent before the records were there): the consumer stays awake `grace`
seconds after it, long enough for a fetch sent after the hint to come back. During a nap no fetch
is in flight, so the first fetch after it sees everything hinted. Why: docs/decisions/0020.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer

from dunning.listener import Listener

PREFIX = "records:"
# one statement for several topics; delivered at commit (or at once outside a transaction)
HINT_SQL = f"SELECT pg_notify('{PREFIX}' || t, '') FROM unnest($1::text[]) AS t"


def channel(topic: str) -> str:
    """The NOTIFY channel of a topic's hints."""
    return PREFIX + topic


async def hint(db: asyncpg.Pool | asyncpg.Connection, topics: Iterable[str]) -> None:
    """Hint that records the broker acknowledged are on these topics (call after the acknowledgement)."""
    await db.execute(HINT_SQL, sorted(set(topics)))


class Naps:
    """The naps of one consumer (see the module docstring). `listening` says whether hints can reach
    it now; the runner naps only then, and otherwise dozes on the broker's fetch wait as before."""

    RETRY_SECONDS = 5.0

    def __init__(self, pool: asyncpg.Pool, topics: Sequence[str], *, nap_seconds: float, grace_seconds: float = 0.25):
        self.nap_seconds, self.grace = nap_seconds, grace_seconds
        self.listener = Listener(pool, [channel(t) for t in topics], on_notify=self.hinted, on_lost=self.hinted)
        self._hint = asyncio.Event()
        self.hinted_at = float("-inf")  # time.monotonic() of the last hint
        self.naps = 0
        self.hints = 0
        self._retry_at = float("-inf")

    def hinted(self, *_args) -> None:
        """A hint (a LISTEN callback: it takes and ignores its arguments), or the listener lost."""
        self.hinted_at = time.monotonic()
        self.hints += 1
        self._hint.set()

    @property
    def listening(self) -> bool:
        return self.listener.listening

    async def keep_listening(self) -> None:
        """Listen again if the LISTEN connection was lost, at most every `RETRY_SECONDS` (PostgreSQL
        may be down: meanwhile the consumer dozes on the broker's wait)."""
        if self.listening or time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + self.RETRY_SECONDS
        await self.listener.ensure()

    async def close(self) -> None:
        await self.listener.close()

    def may_nap(self) -> bool:
        """Not within `grace` of a hint heard while awake (a fetch sent before it may have missed it)."""
        return self.listening and time.monotonic() - self.hinted_at > self.grace

    async def nap(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Pause every assigned partition until a hint, `stopping`, or `nap_seconds`; then resume."""
        self._hint.clear()
        partitions = consumer.assignment()
        consumer.pause(*partitions)
        self.naps += 1
        try:
            waits = [asyncio.ensure_future(self._hint.wait()), asyncio.ensure_future(stopping.wait())]
            try:
                await asyncio.wait(waits, timeout=self.nap_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await w
        finally:
            consumer.resume(*consumer.paused())
        self.hinted_at = float("-inf")  # the next fetch is sent after every hint so far
