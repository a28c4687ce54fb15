"""Inbox: dedupe consumed events by id, in the transaction that applies them (Polar's pattern)."""

import asyncpg


async def claim(
    conn: asyncpg.Connection, event_id: str, event_type: str, topic: str, status: str = "processed"
) -> bool:
    """Record the event as consumed; False if it was consumed before (then do nothing)."""
    inserted = await conn.fetchval(
        "INSERT INTO inbox (event_id, event_type, topic, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (event_id) DO NOTHING RETURNING true",
        event_id,
        event_type,
        topic,
        status,
    )
    return bool(inserted)


async def claim_many(
    conn: asyncpg.Connection, event_ids: list[str], event_types: list[str], topics: list[str]
) -> set[str]:
    """`claim` for a batch in one statement: the ids not consumed before."""
    rows = await conn.fetch(
        "INSERT INTO inbox (event_id, event_type, topic) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text",
        event_ids,
        event_types,
        topics,
    )
    return {row[0] for row in rows}


async def purge(conn: asyncpg.Connection, older_than_days: int = 14) -> int:
    """Forget ids older than the broker's retention: they can no longer be redelivered."""
    result = await conn.execute(
        "DELETE FROM inbox WHERE received_at < now() - make_interval(days => $1)", older_than_days
    )
    return int(result.split()[-1])
