"""SQL of the SMS channel: the messages Twilio accepted, their status callbacks, and the customers an
inbound STOP from a number opts out."""

from typing import Any, NamedTuple

import asyncpg

from dunning_notifier.sms_text import SmsText

# Twilio's statuses of an outbound message, in the order they can follow each other; a callback that
# arrives after a later one (callbacks are not ordered) is recorded but changes nothing.
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
    "canceled": 4,
}

_ACCEPTED = """
WITH message AS (
    INSERT INTO sms_messages (message_sid, delivery_id, tenant_id, to_number, encoding, segments, truncated, status)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (message_sid) DO NOTHING
)
UPDATE deliveries SET sms_encoding = $5, sms_segments = $6, provider_status = $8, provider_status_at = now()
 WHERE delivery_id = $2
"""


async def accepted(
    pool: asyncpg.Pool, *, message_sid: str, delivery_id: str, tenant_id: str, to: str, text: SmsText, status: str
) -> None:
    """Twilio took the message (201): keep it, and what it went as on the delivery."""
    await pool.execute(
        _ACCEPTED, message_sid, delivery_id, tenant_id, to, text.encoding, text.segments, text.truncated, status
    )


_LOCK_MESSAGE = """
SELECT m.status AS message_status, d.delivery_id, d.tenant_id, d.invoice_id, d.stage_id, d.stage, d.channel,
       d.state, m.to_number
  FROM sms_messages m JOIN deliveries d USING (delivery_id)
 WHERE m.message_sid = $1 FOR UPDATE OF m
"""
_ADD_EVENT = """
INSERT INTO sms_status_events (message_sid, status, error_code) VALUES ($1, $2, $3)
ON CONFLICT (message_sid, status) DO NOTHING RETURNING received_at
"""
_MOVE = """
WITH message AS (
    UPDATE sms_messages SET status = $2, error_code = coalesce($3, error_code), updated_at = now()
     WHERE message_sid = $1 RETURNING delivery_id
)
UPDATE deliveries d SET provider_status = $2, provider_status_at = now()
  FROM message WHERE d.delivery_id = message.delivery_id
"""


class StatusChange(NamedTuple):
    delivery: asyncpg.Record  # delivery_id, tenant_id, invoice_id, stage_id, stage, channel, state, to_number
    new: bool  # the first callback of this status for this message
    moved: bool  # ... and later than what the message held: the delivery's provider_status is now it


async def record_status(
    conn: asyncpg.Connection, message_sid: str, status: str, error_code: int | None
) -> StatusChange | None:
    """A status callback, in the caller's transaction: kept once per (message, status); the message and
    its delivery move to it if it is later than what the message holds (callbacks are not ordered).
    None if no message has this sid."""
    row = await conn.fetchrow(_LOCK_MESSAGE, message_sid)
    if row is None:
        return None
    new = await conn.fetchval(_ADD_EVENT, message_sid, status, error_code) is not None
    moved = new and STATUS_RANK.get(status, 0) > STATUS_RANK.get(row["message_status"], -1)
    if moved:
        await conn.execute(_MOVE, message_sid, status, error_code)
    return StatusChange(row, new, moved)


_CUSTOMERS_AT = """
SELECT DISTINCT d.tenant_id, d.customer_id FROM sms_messages m JOIN deliveries d USING (delivery_id)
 WHERE m.to_number = $1 AND d.customer_id IS NOT NULL
UNION
SELECT tenant_id, customer_id FROM contacts WHERE phone = $1
"""


async def customers_at(conn: asyncpg.Connection, phone: str) -> list[dict[str, Any]]:
    """The (tenant, customer)s this number belongs to: those we have sent an SMS to at it, and those
    whose current contacts name it."""
    return [dict(r) for r in await conn.fetch(_CUSTOMERS_AT, phone)]


_MESSAGES_OF = """
SELECT m.message_sid, m.to_number, m.encoding, m.segments, m.truncated, m.status, m.error_code, m.created_at,
       m.updated_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('status', e.status, 'error_code', e.error_code,
                                                     'received_at', e.received_at) ORDER BY e.received_at)
                   FROM sms_status_events e WHERE e.message_sid = m.message_sid), '[]'::jsonb) AS events
  FROM sms_messages m WHERE m.tenant_id = $1 AND m.delivery_id = $2 ORDER BY m.created_at
"""


async def messages_of(pool: asyncpg.Pool, tenant_id: str, delivery_id: str) -> list[asyncpg.Record]:
    """The messages Twilio accepted for a delivery of the tenant, each with its status callbacks."""
    return await pool.fetch(_MESSAGES_OF, tenant_id, delivery_id)
