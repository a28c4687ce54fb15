"""SQL for opt-outs and invalid contacts (contact_blocks, audited in contact_block_log), the tenants'
channel preferences, fallback deliveries, replies and delivery status reports (optouts.py, inbound.py)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

# --- contact blocks ----------------------------------------------------------------------------

# A block is (re)activated: a new row, or a cleared one made active again; the log row is written in
# the same statement, only when something changed (an opt-out clicked twice is one entry).
_BLOCK = """
WITH up AS (
    INSERT INTO contact_blocks AS b (tenant_id, customer_id, channel, address, kind, reason, source, delivery_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (tenant_id, customer_id, channel, address, kind) DO UPDATE
       SET reason = excluded.reason, source = excluded.source, delivery_id = excluded.delivery_id,
           created_at = now(), cleared_at = NULL, cleared_by = NULL
     WHERE b.cleared_at IS NOT NULL
    RETURNING tenant_id, customer_id, channel, address, kind, reason, source, created_at
), logged AS (
    INSERT INTO contact_block_log (tenant_id, customer_id, channel, address, kind, action, reason, actor)
    SELECT tenant_id, customer_id, channel, address, kind, 'blocked', reason, source FROM up
)
SELECT * FROM up
"""


async def block(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    customer_id: str,
    channel: str,
    address: str,
    kind: str,
    reason: str,
    source: str,
    delivery_id: str | None = None,
) -> asyncpg.Record | None:
    """Record an opt-out or an invalid address; the new row, or None if it was already active."""
    return await conn.fetchrow(_BLOCK, tenant_id, customer_id, channel, address, kind, reason, source, delivery_id)


_CLEAR = """
WITH cleared AS (
    UPDATE contact_blocks SET cleared_at = now(), cleared_by = $5
     WHERE tenant_id = $1 AND customer_id = $2 AND channel = $3 AND kind = ANY($4::text[]) AND cleared_at IS NULL
    RETURNING tenant_id, customer_id, channel, address, kind, reason, cleared_at, cleared_by
), logged AS (
    INSERT INTO contact_block_log (tenant_id, customer_id, channel, address, kind, action, reason, actor)
    SELECT tenant_id, customer_id, channel, address, kind, 'cleared', $6, $5 FROM cleared
)
SELECT * FROM cleared
"""


async def clear(
    conn: Executor, *, tenant_id: str, customer_id: str, channel: str, kinds: Sequence[str], actor: str, reason: str
) -> list[asyncpg.Record]:
    """Clear a customer's active blocks of these kinds on a channel (audited); the rows cleared."""
    return await conn.fetch(_CLEAR, tenant_id, customer_id, channel, list(kinds), actor, reason)


_ACTIVE_FOR = """
SELECT kind, reason, created_at FROM contact_blocks
 WHERE tenant_id = $1 AND customer_id = $2 AND channel = $3 AND address = ANY($4::text[]) AND cleared_at IS NULL
 ORDER BY kind DESC LIMIT 1
"""


async def active_block(
    conn: Executor, tenant_id: str, customer_id: str, channel: str, addresses: Sequence[str]
) -> asyncpg.Record | None:
    """The active block of any of these addresses on the channel (`opted_out` before `invalid`)."""
    return await conn.fetchrow(_ACTIVE_FOR, tenant_id, customer_id, channel, list(addresses))


# The active blocks of a claimed batch's addresses, in one round trip: (position in the batch, block).
_ACTIVE_FOR_MANY = """
SELECT u.i, b.kind, b.reason, b.created_at
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(t, c, ch, a, i)
  JOIN contact_blocks b ON b.tenant_id = u.t AND b.customer_id = u.c AND b.channel = u.ch AND b.address = u.a
 WHERE b.cleared_at IS NULL
"""


async def active_blocks(conn: Executor, keys: Sequence[tuple[str, str, str, str]]) -> dict[int, asyncpg.Record]:
    """For (tenant, customer, channel, address) keys: the active block of each that has one, by its
    0-based position (`opted_out` before `invalid`)."""
    if not keys:
        return {}
    rows = await conn.fetch(_ACTIVE_FOR_MANY, *(list(col) for col in zip(*keys, strict=True)))
    found: dict[int, asyncpg.Record] = {}
    for r in sorted(rows, key=lambda r: r["kind"]):  # invalid < opted_out: opted_out written last, wins
        found[r["i"] - 1] = r
    return found


_OF_CUSTOMER = """
SELECT channel, address, kind, reason, source, delivery_id, created_at, cleared_at, cleared_by
  FROM contact_blocks WHERE tenant_id = $1 AND customer_id = $2
 ORDER BY channel, created_at DESC
"""
_LOG_OF_CUSTOMER = """
SELECT channel, address, kind, action, reason, actor, at FROM contact_block_log
 WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id DESC LIMIT 200
"""


async def blocks_of(pool: asyncpg.Pool, tenant_id: str, customer_id: str) -> tuple[list[Any], list[Any]]:
    """A customer's blocks (active and cleared) and the last 200 changes to them, newest first."""
    async with pool.acquire() as conn:
        return await conn.fetch(_OF_CUSTOMER, tenant_id, customer_id), await conn.fetch(
            _LOG_OF_CUSTOMER, tenant_id, customer_id
        )


# --- channel preferences -----------------------------------------------------------------------

_PREFERENCES = "SELECT fallback, pause_on_reply, pause_days, updated_at FROM channel_preferences WHERE tenant_id = $1"
_PUT_PREFERENCES = """
INSERT INTO channel_preferences (tenant_id, fallback, pause_on_reply, pause_days) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id) DO UPDATE SET fallback = excluded.fallback, pause_on_reply = excluded.pause_on_reply,
       pause_days = excluded.pause_days, updated_at = now()
RETURNING fallback, pause_on_reply, pause_days, updated_at
"""


async def preferences(conn: Executor, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_PREFERENCES, tenant_id)


async def put_preferences(
    conn: Executor, tenant_id: str, fallback: Sequence[str], pause_on_reply: bool, pause_days: int
) -> asyncpg.Record:
    row = await conn.fetchrow(_PUT_PREFERENCES, tenant_id, list(fallback), pause_on_reply, pause_days)
    assert row is not None
    return row


# --- fallback deliveries -----------------------------------------------------------------------

# The same stage on another channel, linked to the delivery it stands in for; nothing if the
# invoice is stopped or paused, or if this (invoice, stage, channel) already has a delivery.
_INSERT_FALLBACK = """
INSERT INTO deliveries AS d (delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template, recipient,
                             payload, source_event_id, traceparent, customer_id, fallback_of)
SELECT $1, o.tenant_id, o.invoice_id, o.stage_id, o.stage, $2, o.template, $3, o.payload, o.source_event_id,
       o.traceparent, o.customer_id, o.delivery_id
  FROM deliveries o
 WHERE o.delivery_id = $4
   AND NOT EXISTS (SELECT 1 FROM invoice_stops s WHERE s.tenant_id = o.tenant_id AND s.invoice_id = o.invoice_id)
ON CONFLICT (tenant_id, invoice_id, stage, channel) DO NOTHING
RETURNING delivery_id
"""


async def insert_fallback(
    conn: asyncpg.Connection, *, delivery_id: str, channel: str, recipient: str | None, fallback_of: str
) -> str | None:
    """The new delivery's id, or None if none was made (stopped invoice, or the channel has one)."""
    return await conn.fetchval(_INSERT_FALLBACK, delivery_id, channel, recipient, fallback_of)


_FALLBACK_OF = "SELECT delivery_id, fallback_of FROM deliveries WHERE delivery_id = ANY($1::text[])"


async def fallback_links(conn: Executor, delivery_ids: Sequence[str]) -> dict[str, str | None]:
    return {r["delivery_id"]: r["fallback_of"] for r in await conn.fetch(_FALLBACK_OF, list(delivery_ids))}


_ORIGIN = """
SELECT delivery_id, tenant_id, invoice_id, stage, channel, customer_id, recipient, payload, state, provider_status
  FROM deliveries WHERE delivery_id = $1
"""


async def delivery(conn: Executor, delivery_id: str) -> asyncpg.Record | None:
    """A delivery by id, any tenant (the inbound endpoint finds it from a reply or bounce address)."""
    return await conn.fetchrow(_ORIGIN, delivery_id)


_MARK_BOUNCED = "UPDATE deliveries SET provider_status = 'bounced', updated_at = now() WHERE delivery_id = $1"


async def mark_bounced(conn: asyncpg.Connection, delivery_id: str) -> None:
    await conn.execute(_MARK_BOUNCED, delivery_id)


_REPORT = """
INSERT INTO delivery_reports (delivery_id, recipient, action, status, diagnostic) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING RETURNING delivery_id
"""


async def record_report(
    conn: asyncpg.Connection, delivery_id: str, recipient: str, action: str, status: str, diagnostic: str | None
) -> bool:
    """Record one DSN recipient report; False if it was already recorded (a DSN received twice)."""
    return await conn.fetchval(_REPORT, delivery_id, recipient, action, status, diagnostic) is not None


# --- replies -----------------------------------------------------------------------------------

_INSERT_REPLY = """
INSERT INTO replies (reply_id, tenant_id, delivery_id, invoice_id, customer_id, channel, stage, from_address,
                     subject, text, message_id, auto_reply, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING RETURNING reply_id
"""


async def insert_reply(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """Store a reply; False if one with its Message-ID is already stored (a redelivery)."""
    cols = (
        "reply_id",
        "tenant_id",
        "delivery_id",
        "invoice_id",
        "customer_id",
        "channel",
        "stage",
        "from_address",
        "subject",
        "text",
        "message_id",
        "auto_reply",
        "received_at",
    )
    return await conn.fetchval(_INSERT_REPLY, *(row[c] for c in cols)) is not None


_LIST_REPLIES = """
SELECT reply_id, delivery_id, invoice_id, customer_id, channel, stage, from_address, subject, text, auto_reply,
       received_at
  FROM replies WHERE tenant_id = $1 AND ($2::text IS NULL OR invoice_id = $2)
   AND ($3::text IS NULL OR reply_id < $3)
 ORDER BY reply_id DESC LIMIT $4
"""


async def list_replies(
    pool: asyncpg.Pool, tenant_id: str, *, invoice_id: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(_LIST_REPLIES, tenant_id, invoice_id, before, limit)


# Reminders sent since `since` per channel and stage, and how many of them got a reply that was not
# automatic (a reminder answered twice counts once).
_RESPONSE_RATE = """
SELECT d.channel, d.stage, count(*) AS sent,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM replies r WHERE r.delivery_id = d.delivery_id
                                        AND NOT r.auto_reply)) AS replied
  FROM deliveries d
 WHERE d.tenant_id = $1 AND d.state = 'sent' AND d.sent_at >= $2
 GROUP BY d.channel, d.stage ORDER BY d.channel, d.stage
"""


async def response_rate(pool: asyncpg.Pool, tenant_id: str, since: datetime) -> list[asyncpg.Record]:
    return await pool.fetch(_RESPONSE_RATE, tenant_id, since)
