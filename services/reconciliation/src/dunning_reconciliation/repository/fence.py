"""The payments watermark's locks and statements: the acknowledgement fence, the publisher's
election and its snapshot (see watermark.py and docs/cancel-guarantee.md#the-payments-watermark),
and the transaction-scoped advisory locks on names that serialise payments with their invoices."""

from datetime import datetime

import asyncpg

# Advisory lock keys (bigint) of the payments watermark: the acknowledgement fence, and the publisher
# election (see watermark.py and docs/cancel-guarantee.md#the-payments-watermark).
ACK_FENCE = 0x5041_594D_454E_5401  # "PAYMENT" 01
WATERMARK_PUBLISHER = 0x5041_594D_454E_5402
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
# One snapshot: the oldest payment event still in the outbox, the invoices topic's applied positions,
# and the payments offsets the broker acknowledged.
_WATERMARK_SNAPSHOT = """
SELECT clock_timestamp() AS read_at,
       (SELECT min(created_at) FROM outbox WHERE topic = $1) AS oldest_waiting,
       (SELECT coalesce(jsonb_object_agg(partition::text, next_offset), '{}'::jsonb)
          FROM consumer_positions WHERE topic = $2) AS positions,
       (SELECT coalesce(jsonb_object_agg(partition::text, next_offset), '{}'::jsonb)
          FROM published_offsets WHERE topic = $1) AS published
"""


async def acknowledge_time(conn: asyncpg.Connection) -> datetime:
    """Call first in a transaction that acknowledges a payment: join the fence, then read the clock.
    The shared lock is held until the transaction ends."""
    return await conn.fetchval(_ACKNOWLEDGE_TIME, ACK_FENCE)


async def clock(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval(_CLOCK)


async def try_lead_watermark(conn: asyncpg.Connection) -> bool:
    """Take the publisher's session lock if no other replica holds it."""
    return bool(await conn.fetchval(_TRY_LEAD, WATERMARK_PUBLISHER))


async def resign_watermark(conn: asyncpg.Connection) -> None:
    await conn.execute(_RESIGN)


async def fence_holders(conn: asyncpg.Connection) -> asyncpg.Record:
    """(holders, unknown, oldest) of the acknowledgement fence, now."""
    return await conn.fetchrow(_FENCE_HOLDERS, ACK_FENCE >> 32, ACK_FENCE & 0xFFFF_FFFF)


async def watermark_snapshot(conn: asyncpg.Connection, payments_topic: str, invoices_topic: str) -> asyncpg.Record:
    """(read_at, oldest_waiting, positions, published) in one statement."""
    return await conn.fetchrow(_WATERMARK_SNAPSHOT, payments_topic, invoices_topic)


_LOCK_NAMES = "SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name"


async def lock_names(conn: asyncpg.Connection, names: list[str] | set[str]) -> None:
    """Transaction-scoped advisory locks, taken in sorted order in one statement (so two takers
    cannot deadlock)."""
    await conn.execute(_LOCK_NAMES, sorted(set(names)))
