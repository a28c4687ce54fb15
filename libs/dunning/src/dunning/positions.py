"""A consumer's applied positions (`track_positions`): the next offset of each partition, written in
the batch's transaction so it never runs ahead of the state."""

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition


async def record_positions(conn: asyncpg.Connection, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """Next offset per partition applied, in the batch's transaction; never moves backwards (a
    rebalance may hand a partition to a replica that re-reads it from an older commit)."""
    tps = list(batch)
    await conn.execute(
        "INSERT INTO consumer_positions AS c (topic, partition, next_offset)"
        " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])"
        " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = greatest(c.next_offset, EXCLUDED.next_offset),"
        " updated_at = now()",
        [tp.topic for tp in tps],
        [tp.partition for tp in tps],
        [batch[tp][-1].offset + 1 for tp in tps],
    )
