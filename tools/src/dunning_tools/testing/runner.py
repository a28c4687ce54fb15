"""Envelopes through the consumer runner's real path (`ConsumerRunner.process_batch`: decode, inbox,
handlers, one transaction per batch) without a broker, for the batch-parity tests and the benches;
and the parity harness itself: one stream applied with a handler table's batch handlers and without
them (each event by its per-event handler), each way on a fresh schema."""

import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from dunning.consumer import ConsumerRunner
from dunning.contracts import topic_of
from dunning.db import create_pool, migrate
from dunning.events import dumps
from dunning.handler_table import HandlerSpec, without_batches
from dunning_tools.testing.fakes import FakeConsumer

T = TypeVar("T")


def records(envelopes: Iterable[dict], *, topic: str | None = None, first_offset: int = 0) -> list[ConsumerRecord]:
    """The records a consumer would hand over for these envelopes, on partition 0 of `topic` (by
    default the topic of each envelope's type), keyed by subject, at consecutive offsets."""
    out = []
    for n, envelope in enumerate(envelopes):
        value = dumps(envelope)
        out.append(
            ConsumerRecord(
                topic or topic_of(envelope["type"]),
                0,
                first_offset + n,
                0,
                0,
                envelope["subject"].encode(),
                value,
                None,
                0,
                len(value),
                [],
            )
        )
    return out


def runner_on(
    pool: asyncpg.Pool, handlers: Mapping[Any, HandlerSpec], *, batch: bool = True, name: str = "t", **options
) -> ConsumerRunner:
    """A runner applying `handlers` on `pool` (with their batch variants, or per event when `batch`
    is false), one handler attempt unless told otherwise; it is fed with `feed`, never started."""
    options.setdefault("handler_attempts", 1)
    return ConsumerRunner(
        name=name,
        pool=pool,
        bootstrap_servers="unused",
        group_id=name,
        topics=[],
        handlers=handlers if batch else without_batches(handlers),
        **options,
    )


async def feed(
    runner: ConsumerRunner, records: list[ConsumerRecord], batch_size: int, consumer: Any = None
) -> list[float]:
    """Apply the records through the runner `batch_size` at a time, as polls would hand them over
    (grouped by topic); returns the seconds each batch took."""
    consumer = consumer or FakeConsumer()
    seconds = []
    for lo in range(0, len(records), batch_size):
        chunk = records[lo : lo + batch_size]
        batch = {
            TopicPartition(t, 0): [r for r in chunk if r.topic == t] for t in dict.fromkeys(r.topic for r in chunk)
        }
        start = time.perf_counter()
        await runner.process_batch(consumer, batch)
        seconds.append(time.perf_counter() - start)
    return seconds


async def both_ways(dsn: str, migrations: Path, run: Callable[[asyncpg.Pool, bool], Awaitable[T]]) -> tuple[T, T]:
    """`run(pool, batch)` once per event (batch false) and once with the batch handlers (batch true),
    each on a pool of its own freshly migrated schema; returns (per event, batched), to compare."""
    results = []
    for batch in (False, True):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        migrate(dsn, schema, migrations)
        pool = await create_pool(dsn, schema, min_size=1, max_size=2)
        try:
            results.append(await run(pool, batch))
        finally:
            await pool.close()
    return results[0], results[1]
