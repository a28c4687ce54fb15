"""Transactional outbox: write events with the state change; a relay publishes them.

`add(conn, event, topic)` must be called inside the transaction that changes state. The relay
claims rows lane by lane (a lane is hash(key) mod LANES): it takes the lane's advisory lock for the
transaction, reads the lane's rows in id order with FOR UPDATE SKIP LOCKED, publishes them, waits
for the broker's acks, deletes them and commits. Several relays may run (one per replica): a lane
is worked by one relay at a time, so one invoice's events leave in the order they were written,
and a relay that dies mid-batch rolls back so its rows are published again (at-least-once; the
consumers' inboxes drop the duplicates). Rows are never read by "id > last seen", so a row that
commits late is not skipped (see pyeventsourcing's postgres notes). The argument, with the published
offsets the payments watermark relies on: docs/cancel-guarantee.md#the-outbox-relays-lanes.
"""

import asyncio
import random
import zlib
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from opentelemetry.trace import SpanKind

from dunning import naps
from dunning.events import dumps, envelope, topic_for_type
from dunning.logging import get_logger
from dunning.loops import Loop
from dunning.tracing import tracer

LANES = 16
log = get_logger(__name__)


def lane_of(key: str) -> int:
    return zlib.crc32(key.encode()) % LANES


def lane_sql(key: str) -> str:
    """A lane computed in SQL from the key expression `key`, for events that only SQL can write (the
    first byte of its SHA-256, mod LANES: PostgreSQL has crc32 only from version 18). It differs from
    `lane_of`; what keeps one key's events in one lane, in order, is that every event of that key
    type is written with the same one of the two (CustomerUpdated: always this one)."""
    return f"get_byte(sha256(convert_to({key}, 'UTF8')), 0) % {LANES}"


def channel_name(schema: str) -> str:
    return f"outbox_{schema}"


# The outbox INSERT and the relays' wake-up, each written once: `add_many` and `add_raw` below, and
# the set-based statements in the services' repositories (ingest, scheduler) compose these.
INSERT = "INSERT INTO outbox (lane, topic, key, event_id, event_type, headers, payload) "
WAKE_RELAYS = "pg_notify('outbox_' || current_schema(), '')"  # the channel_name of the schema


def insert_and_wake(rows_sql: str) -> str:
    """A statement writing the rows `rows_sql` selects (INSERT's columns, in order) and, if there were
    any, one NOTIFY that wakes the relays at commit."""
    return (
        f"WITH queued AS ({INSERT}{rows_sql} RETURNING 1)"
        f" SELECT {WAKE_RELAYS} FROM (SELECT 1 FROM queued LIMIT 1) AS one"
    )


_ADD_MANY = insert_and_wake(
    "SELECT l, t, k, i, y, h::jsonb, p FROM unnest($1::smallint[], $2::text[], $3::text[], $4::uuid[],"
    " $5::text[], $6::text[], $7::bytea[]) AS u(l, t, k, i, y, h, p)"
)


def headers_of(env: dict[str, Any]) -> dict[str, str]:
    """The Kafka headers of an envelope: its type, id and traceparent, so consumers route and trace
    without parsing the value."""
    hdrs = {"ce_type": env["type"], "ce_id": env["id"]}
    if env.get("traceparent"):
        hdrs["traceparent"] = env["traceparent"]
    return hdrs


Message = Any  # a dunning.contracts record, or an envelope already built (dunning.events.envelope)


async def add(
    conn: asyncpg.Connection,
    message: Message,
    *,
    topic: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Write one event to the outbox (inside the caller's transaction)."""
    await add_many(conn, [message], topic=topic, key=key, headers=headers)


async def add_many(
    conn: asyncpg.Connection,
    messages: list[Message],
    *,
    topic: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Write events (records, or envelopes) to the outbox in one statement; the topic of each is its
    type's in the catalogue unless given, the key its subject (the invoice id)."""
    await add_rows(conn, outbox_rows(messages, topic=topic, key=key, headers=headers))


def outbox_rows(
    messages: list[Message],
    *,
    topic: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> list[list[Any]]:
    """The outbox columns `add_many` writes for these events (built apart, so that a caller can build
    them while its previous statement runs; `add_rows` writes them)."""
    rows = []
    mapping = topic_for_type()
    for message in messages:
        env = message if isinstance(message, dict) else envelope(message)
        k = key or env["subject"]
        hdrs = dumps({**headers_of(env), **(headers or {})}).decode()
        rows.append((lane_of(k), topic or mapping[env["type"]], k, env["id"], env["type"], hdrs, dumps(env)))
    return [list(col) for col in zip(*rows, strict=True)] if rows else []


async def add_rows(conn: asyncpg.Connection, columns: list[list[Any]]) -> None:
    """Write the columns `outbox_rows` built (nothing for none)."""
    if not columns:
        return
    # One statement, one round trip: the rows, and a NOTIFY that wakes the relays at commit.
    await conn.execute(_ADD_MANY, *columns)


_DELETE_AND_HINT = (
    "WITH gone AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]))"
    f" SELECT pg_notify('{naps.PREFIX}' || t, '') FROM unnest($2::text[]) AS t"
)


class OutboxRelay(Loop):
    """Publishes outbox rows to Kafka; run one per service replica. Each step publishes one batch; a
    full batch means more are waiting (go again at once), otherwise it waits `poll_seconds` or until
    the NOTIFY that `add_many` sends at commit. After stop(), `drain` publishes what is left, for at
    most `drain_seconds` (the runtime stops the relay last, so that includes what the drain wrote)."""

    name = "outbox-relay"
    error_event = "outbox.relay.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        schema: str,
        *,
        batch_size: int = 2000,
        poll_seconds: float = 2.0,
        lanes_per_claim: int = LANES,
        record_offsets: bool = False,
        drain_seconds: float = 5.0,
    ):
        super().__init__(idle_seconds=poll_seconds, listen=(pool, channel_name(schema)))
        self.pool = pool
        self.producer = producer
        self.schema = schema
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.lanes_per_claim = lanes_per_claim
        # Record the acknowledged offsets (published_offsets) with the delete: the payments
        # watermark states them.
        self.record_offsets = record_offsets
        self.drain_seconds = drain_seconds
        self.published = 0  # this process's own hold is `paused` (tests); operators use set_paused

    async def step(self) -> float | None:
        return 0 if await self.publish_once() >= self.batch_size else None

    async def drain(self) -> None:
        if self.paused:
            return
        try:
            async with asyncio.timeout(self.drain_seconds):
                while await self.publish_once() >= self.batch_size:
                    pass
        except Exception as exc:
            log.warning("outbox.relay.drain_incomplete", error=repr(exc))

    async def publish_once(self) -> int:
        """Claim, publish and delete one batch; returns how many rows were published."""
        lanes = random.sample(range(LANES), LANES)[: self.lanes_per_claim]
        async with self.pool.acquire() as conn, conn.transaction():
            # An operator's pause (relay_control) holds every replica: checked in the same statement.
            locked = await conn.fetch(
                "SELECT lane FROM unnest($1::int[]) AS lane"
                " WHERE NOT (SELECT paused FROM relay_control) AND pg_try_advisory_xact_lock(hashtext($2), lane)",
                lanes,
                f"outbox:{self.schema}",
            )
            if not locked:
                return 0
            rows = await conn.fetch(
                "SELECT id, topic, key, headers, payload FROM outbox"
                " WHERE lane = ANY($1::smallint[]) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                [r["lane"] for r in locked],
                self.batch_size,
            )
            if not rows:
                return 0
            futures = []
            # One span for the batch, linked to nothing: each event keeps its own trace context in
            # its headers and envelope, which is what the consumer continues from.
            with tracer().start_as_current_span("outbox publish", kind=SpanKind.PRODUCER) as span:
                span.set_attribute("messaging.batch.message_count", len(rows))
                for row in rows:
                    headers = [(k, v.encode()) for k, v in (row["headers"] or {}).items()]
                    futures.append(
                        await self.producer.send(
                            row["topic"],
                            value=bytes(row["payload"]),
                            key=row["key"].encode(),
                            headers=headers,
                        )
                    )
            acks = await asyncio.gather(*futures)
            # deleted, and a hint to idle consumers of these topics at commit (dunning.naps)
            await conn.execute(_DELETE_AND_HINT, [r["id"] for r in rows], sorted({r["topic"] for r in rows}))
            if self.record_offsets:
                await _record_offsets(conn, acks)
        self.published += len(rows)
        return len(rows)


async def _record_offsets(conn: asyncpg.Connection, acks: list) -> None:
    ends: dict[tuple[str, int], int] = {}
    for meta in acks:
        key = (meta.topic, meta.partition)
        ends[key] = max(ends.get(key, 0), meta.offset + 1)
    await conn.execute(
        "INSERT INTO published_offsets AS p (topic, partition, next_offset)"
        " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])"
        " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = greatest(p.next_offset, EXCLUDED.next_offset),"
        " updated_at = now()",
        [t for t, _ in ends],
        [p for _, p in ends],
        list(ends.values()),
    )


async def add_raw(
    conn: asyncpg.Connection,
    *,
    topic: str,
    key: str,
    payload: bytes,
    event_id: str,
    event_type: str,
    headers: dict[str, str],
) -> None:
    """Write a message that is not a CloudEvent of ours (a dead letter) to the outbox."""
    await conn.execute(
        INSERT + "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        lane_of(key),
        topic,
        key,
        event_id,
        event_type,
        headers,
        payload,
    )


async def set_paused(conn: asyncpg.Connection, paused: bool, *, by: str = "operator") -> None:
    """Hold (or release) every relay of the connection's schema; rows wait in the outbox meanwhile."""
    await conn.execute("UPDATE relay_control SET paused = $1, changed_at = now(), changed_by = $2", paused, by)
    if not paused:
        await conn.execute(f"SELECT {WAKE_RELAYS}")


_RELAY_STATE = "SELECT paused, changed_at, changed_by, (SELECT count(*) FROM outbox) AS waiting FROM relay_control"


async def relay_state(conn: asyncpg.Connection) -> asyncpg.Record:
    """The operator's flag (paused, changed_at, changed_by) and the rows waiting in the outbox."""
    return await conn.fetchrow(_RELAY_STATE)
