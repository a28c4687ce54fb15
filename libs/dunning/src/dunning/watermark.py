"""Watermark statements: how far what a service has acknowledged has been published.

A service that acknowledges stops (reconciliation: payments and credit notes; invoice-ingest: voids,
write-offs, holds, disputes, promises, payment plans) states a few times a second "every stop I
acknowledged at or before W is on these topics below these offsets" on `dunning.watermarks.v1`; the
scheduler fires a stage only under a statement of every such service that it has caught up with, so a
stalled relay or a dead service makes reminders wait instead of firing blind.

The pieces, parameterised by the service (`Keys`, the topics its statement covers, its builder):
- the **fence** (`acknowledge_time`): an acknowledging transaction joins a shared advisory lock first,
  then reads the clock, so the publisher can tell which acknowledgements have committed without ever
  making one wait;
- the **election**: one replica publishes at a time (a session advisory lock);
- the **snapshot**: the oldest row still waiting in the outbox on the covered topics, the offsets the
  relay recorded for them (`published_offsets`), and optionally a consumer's positions to certify
  (reconciliation's late matches);
- the **publisher** (`WatermarkPublisher`) putting them together. Why each statement is true forever:
  docs/cancel-guarantee.md#the-payments-watermark and #every-stop-under-the-gate;
- the **cadence** (`Wanted`): a few statements a second only from shortly before the time the
  scheduler said it next needs one (WatermarkWanted), now and then before it; a few a second when
  the scheduler has not said (or not lately). Only when statements are made changes, never what
  they say: docs/cancel-guarantee.md#statements-on-demand.
"""

import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaProducer

from dunning import naps
from dunning.clock import utcnow
from dunning.contracts import WatermarkWanted
from dunning.events import Event, dumps, envelope
from dunning.handler_table import HandlerSpec
from dunning.logging import get_logger
from dunning.loops import Backoff, Loop
from dunning.outbox import headers_of

log = get_logger(__name__)

_EPSILON = timedelta(microseconds=1)
_HISTORY_MAX = 10_000


class Keys(NamedTuple):
    """A service's advisory lock keys (bigint): its acknowledgement fence and its publisher election."""

    fence: int
    publisher: int


_ACKNOWLEDGE_TIME = "SELECT clock_timestamp() FROM pg_advisory_xact_lock_shared($1) AS fence"
_CLOCK = "SELECT clock_timestamp()"
_TRY_LEAD = "SELECT pg_try_advisory_lock($1)"
_RESIGN = "SELECT pg_advisory_unlock_all()"
# The transactions holding the fence now, and the earliest start among them (unknown: a start time
# this role cannot see).
_FENCE_HOLDERS = """
SELECT count(*) AS holders, count(*) FILTER (WHERE a.xact_start IS NULL) AS unknown, min(a.xact_start) AS oldest
FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
"""
# One snapshot: the oldest event still in the outbox on the covered topics ($1), the applied positions
# of a consumed topic ($2, may be NULL), and per covered topic and partition the offsets the broker
# acknowledged.
_SNAPSHOT = """
SELECT clock_timestamp() AS read_at,
       (SELECT min(created_at) FROM outbox WHERE topic = ANY($1::text[])) AS oldest_waiting,
       (SELECT coalesce(jsonb_object_agg(partition::text, next_offset), '{}'::jsonb)
          FROM consumer_positions WHERE topic = $2) AS positions,
       (SELECT coalesce(jsonb_object_agg(topic, parts), '{}'::jsonb) FROM (
            SELECT topic, jsonb_object_agg(partition::text, next_offset) AS parts
            FROM published_offsets WHERE topic = ANY($1::text[]) GROUP BY topic) AS per_topic) AS published
"""


async def acknowledge_time(conn: asyncpg.Connection, keys: Keys) -> datetime:
    """Call first in a transaction that acknowledges a stop: join the fence (shared: it never waits),
    then read the clock. The lock is held until the transaction ends."""
    return await conn.fetchval(_ACKNOWLEDGE_TIME, keys.fence)


async def fence_holders(conn: asyncpg.Connection, keys: Keys) -> asyncpg.Record:
    """(holders, unknown, oldest) of the acknowledgement fence, now."""
    return await conn.fetchrow(_FENCE_HOLDERS, keys.fence >> 32, keys.fence & 0xFFFF_FFFF)


async def snapshot(conn: asyncpg.Connection, topics: Sequence[str], positions_topic: str | None) -> asyncpg.Record:
    """(read_at, oldest_waiting, positions, published) in one statement."""
    return await conn.fetchrow(_SNAPSHOT, list(topics), positions_topic)


class Wanted:
    """What the scheduler last said it needs (WatermarkWanted, the newest `computed_at`), and the
    publisher's cadence from it: `fast` from `lead` seconds before `wanted_from`, also while nothing
    was heard for `stale` seconds (a scheduler just started, or gone quiet); else `idle`."""

    def __init__(self, *, lead: float = 1.0, stale: float = 60.0):
        self.lead, self.stale = lead, stale
        self.wanted_from: datetime | None = None
        self.computed_at: datetime | None = None
        self.heard: float | None = None  # time.monotonic() of the last word
        self.on_change: Callable[[], None] | None = None  # the publisher's wake

    def hear(self, wanted: WatermarkWanted) -> None:
        if self.computed_at is not None and wanted.computed_at < self.computed_at:
            return  # an older word (another replica's, or a redelivery)
        changed = wanted.wanted_from != self.wanted_from or self.heard is None
        self.wanted_from, self.computed_at, self.heard = wanted.wanted_from, wanted.computed_at, time.monotonic()
        if changed and self.on_change is not None:
            self.on_change()

    def interval(self, fast: float, idle: float, now: datetime | None = None) -> float:
        """Seconds until the next statement."""
        if self.heard is None or time.monotonic() - self.heard > self.stale:
            return fast
        if self.wanted_from is None:
            return idle
        ahead = (self.wanted_from - (now or utcnow())).total_seconds() - self.lead
        return fast if ahead <= fast else min(idle, ahead)


WANTED = Wanted()  # this process's: one publisher per process


async def on_watermark_wanted(conn: asyncpg.Connection, event: Event[WatermarkWanted]) -> None:
    """The acknowledging services' handler of WatermarkWanted (no inbox: only the newest counts)."""
    WANTED.hear(event.data)


# the scheduler says when it wants statements `lead` seconds ahead, and its hint wakes a napping consumer
# at once (dunning.naps): `wakes=False`, so that at rest its refreshes do not keep the fetches short
WANTED_HANDLER = HandlerSpec(on_watermark_wanted, inbox=False, wakes=False)


async def send_heartbeat(
    producer: AIOKafkaProducer, topic: str, record: Any, *, hint_to: asyncpg.Pool | asyncpg.Connection | None = None
) -> None:
    """Publish a gate heartbeat (a statement, or the scheduler's WatermarkWanted) straight to the
    broker, untraced, and wait for its acknowledgement: only the newest counts, so no outbox. Then
    hint the topic's idle consumers through `hint_to` (dunning.naps)."""
    message = envelope(record, traceparent=None)
    sent = await producer.send(
        topic,
        value=dumps(message),
        key=message["subject"].encode(),
        headers=[(k, v.encode()) for k, v in headers_of(message).items()],
    )
    await sent
    if hint_to is not None:
        await naps.hint(hint_to, [topic])


class Statement(NamedTuple):
    """What a publisher knows at one step; `build` turns it into the service's event record."""

    watermark: datetime
    offsets: dict[str, dict[str, int]]  # covered topic -> partition (text) -> one past the last acknowledged
    positions: dict[str, int]  # certified positions of `positions_topic` ({} without one)
    computed_at: datetime


class WatermarkPublisher(Loop):
    """Publishes a service's watermark while this replica leads (a session advisory lock, held on one
    connection, elects it); the others try to take the lead every four intervals. Each step is one
    statement. A failed step gives up the lead and the connection (no statement is the safe side), then
    the loop base retries after its backoff.

    `topics`: the outbox topics whose waiting rows hold the watermark back and whose published offsets
    the statement names (the relay must record them: `record_offsets=True`). `positions_topic`: a
    consumed topic whose positions the statement certifies once no waiting row is older than the
    snapshot that read them. `build(statement)` returns the event record (its subject is the Kafka
    key); `log_prefix` names the log events (`<prefix>.watermark.leading`, `.error`, `.held_back`)."""

    name = "watermark"

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        log_prefix: str,
        keys: Keys,
        topics: Sequence[str],
        watermarks_topic: str,
        build: Callable[[Statement], Any],
        positions_topic: str | None = None,
        interval_seconds: float = 0.25,
        idle_interval_seconds: float = 30.0,
        wanted: Wanted | None = None,
    ):
        super().__init__(idle_seconds=interval_seconds, backoff=Backoff(initial=1.0, maximum=5.0))
        self.pool = pool
        self.producer = producer
        self.log_prefix = log_prefix
        self.keys = keys
        self.topics = list(topics)
        self.watermarks_topic = watermarks_topic
        self.build = build
        self.positions_topic = positions_topic
        self.interval = interval_seconds
        self.idle_interval = idle_interval_seconds
        self.wanted = wanted or WANTED
        self.error_event = f"{log_prefix}.watermark.error"
        self._conn: asyncpg.Connection | None = None  # held for the session lock
        self._leading = False
        self._history: deque[tuple[datetime, dict[str, int]]] = deque()
        self._certified: dict[str, int] = {}
        self.published = 0
        self.last: dict[str, Any] | None = None  # the last statement's data (the record's fields)

    async def step(self) -> float:
        try:
            if self._conn is None:
                self._conn = await self.pool.acquire()
            if not self._leading:
                if not await self._conn.fetchval(_TRY_LEAD, self.keys.publisher):
                    return self.interval * 4  # another replica publishes
                self._leading = True
                self._history.clear()
                log.info(f"{self.log_prefix}.watermark.leading")
            await self.publish_once(self._conn)
            return self.wanted.interval(self.interval, self.idle_interval)
        except BaseException:
            await self._resign()
            raise

    async def setup(self) -> None:
        self.wanted.on_change = self.wake  # an earlier time wanted: state now, not after the idle wait

    async def teardown(self) -> None:
        await self._resign()

    async def _resign(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute(_RESIGN)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def publish_once(self, conn: asyncpg.Connection) -> dict[str, Any]:
        before = await conn.fetchval(_CLOCK)
        held = await fence_holders(conn, self.keys)
        if held["unknown"]:
            raise RuntimeError("cannot see the start time of a transaction holding the acknowledgement fence")
        fence = before if held["oldest"] is None else min(before, held["oldest"] - _EPSILON)
        snap = await snapshot(conn, self.topics, self.positions_topic)
        oldest = snap["oldest_waiting"]
        watermark = fence if oldest is None else min(fence, oldest - _EPSILON)
        self._history.append((snap["read_at"], {k: int(v) for k, v in snap["positions"].items()}))
        # The newest positions read by a snapshot older than every waiting row: what the transactions
        # that snapshot saw wrote to the outbox is published. (History is in read order.)
        while self._history and (oldest is None or self._history[0][0] < oldest):
            self._certified = self._history.popleft()[1]
        while len(self._history) > _HISTORY_MAX:  # a long stall: keep the newest candidates
            self._history.popleft()
        published = snap["published"]
        offsets = {t: {p: int(o) for p, o in published.get(t, {}).items()} for t in self.topics}
        record = self.build(Statement(watermark, offsets, dict(self._certified), utcnow()))
        await send_heartbeat(self.producer, self.watermarks_topic, record, hint_to=conn)
        self.published += 1
        self.last = record._asdict()
        if oldest is not None and fence - oldest > timedelta(seconds=30):
            log.warning(
                f"{self.log_prefix}.watermark.held_back",
                oldest_waiting=oldest.isoformat(),
                behind_seconds=round((fence - oldest).total_seconds(), 1),
            )
        return self.last
