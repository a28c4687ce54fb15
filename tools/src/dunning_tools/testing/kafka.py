"""Reading and positioning topics on the real broker, the way tests need to.

The session's broker is shared by every test, so a test reads a topic from the start with a group of
its own (`read_topic`), or starts a service's group at the topics' end (`commit_group_at_end`) so a
fresh process reads only what the test produces next, not every earlier test's events.
"""

import asyncio
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(
    bootstrap: str,
    topic: str,
    want: Callable[[list], Any],
    timeout: float = 20.0,
    *,
    decode: Callable[[ConsumerRecord], Any] | None = None,
) -> list:
    """Consume `topic` from the start with a fresh group until `want(items)` holds or `timeout` passes;
    returns the items read: the records, or `decode(record)` of each. The caller asserts on them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"t-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    items: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not want(items):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                items.extend(records if decode is None else map(decode, records))
        return items
    finally:
        await consumer.stop()


async def commit_group_at_end(bootstrap: str, group: str, topics: Iterable[str] | None = None) -> None:
    """Commit `group`'s offsets at the end of `topics` (default: every `dunning.*` topic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()  # also loads the partitions' metadata
        names = sorted(t for t in existing if t.startswith("dunning.")) if topics is None else list(topics)
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        await consumer.commit({tp: await consumer.position(tp) for tp in tps})
    finally:
        await consumer.stop()
