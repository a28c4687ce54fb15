"""SQL for consolidated notices (`notices`, `notice_items`; notices.py tells the story).

A stop of an invoice marks its items in the notices not yet sent (`stop_reason`); every claim reads
the items still unmarked, in the same transaction that takes the notice's row lock, and the stop
locks the same row first: one commits before the other, so no attempt starts with an item a stop
already marked. A notice left with no unmarked stage item carries `cancel_reason`: `cancelled` when
pending, and, when mid-attempt, `cancelled` instead of `pending` after it (as deliveries do).
Every write that ends an attempt is fenced by `attempts`. The statements that publish a stage's
Reminder* event set the item's `outcome` in the same statement: each stage item gets one event."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

# Which stops leave an item out: a terminal stop always; a pause only if the scheduler applied it
# after composing the notice (the notice comes on the customer's partition, the stop on the
# invoice's: either may arrive first; a pause the scheduler knew of was its choice, as a
# StageEscalated after DunningPaused is).
_STOP_APPLIES = "(s_state = 'stopped' OR s_at >= n.composed_at)"

_INSERT_NOTICE = (
    "INSERT INTO notices (notice_id, delivery_id, tenant_id, customer_id, channel, composed_at, recipient,"
    " payload, source_event_id, traceparent)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::uuid, $10)"
    " ON CONFLICT (notice_id) DO NOTHING RETURNING notice_id"
)
_INSERT_ITEMS = (
    "INSERT INTO notice_items (notice_id, position, tenant_id, invoice_id, stage_id, stage, sequence,"
    " stop_reason, stop_cause_event_id, stopped_at)"
    " SELECT $1, u.position, $2, u.invoice_id, u.stage_id, u.stage, u.sequence,"
    " s.reason, s.cause_event_id, CASE WHEN s.reason IS NOT NULL THEN now() END"
    " FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::int[])"
    "   AS u(position, invoice_id, stage_id, stage, sequence)"
    " JOIN notices n ON n.notice_id = $1"
    " LEFT JOIN LATERAL (SELECT x.reason, x.cause_event_id FROM invoice_stops x"
    "   WHERE x.tenant_id = $2 AND x.invoice_id = u.invoice_id"
    "   AND " + _STOP_APPLIES.replace("s_state", "x.state").replace("s_at", "x.stopped_at") + ") s ON true"
)


async def insert_notice(
    conn: asyncpg.Connection,
    *,
    notice_id: str,
    delivery_id: str,
    tenant_id: str,
    customer_id: str,
    channel: str,
    composed_at: datetime,
    recipient: str | None,
    payload: dict[str, Any],
    source_event_id: str,
    traceparent: str | None,
    items: Sequence[tuple[str, str | None, str | None, int | None]],
) -> bool:
    """Record a notice and its items ((invoice, stage id, stage, sequence) in order), the items of an
    invoice already stopped marked at once; False if this notice is recorded already."""
    inserted = await conn.fetchval(
        _INSERT_NOTICE,
        notice_id,
        delivery_id,
        tenant_id,
        customer_id,
        channel,
        composed_at,
        recipient,
        payload,
        source_event_id,
        traceparent,
    )
    if inserted is None:
        return False
    columns = list(zip(*items, strict=True)) if items else [(), (), (), ()]
    await conn.execute(_INSERT_ITEMS, notice_id, tenant_id, list(range(len(items))), *(list(c) for c in columns))
    return True


_MARK_ITEMS = (
    "WITH open AS (SELECT DISTINCT n.notice_id FROM notice_items i JOIN notices n ON n.notice_id = i.notice_id"
    "  WHERE i.tenant_id = $1 AND i.invoice_id = $2 AND i.stop_reason IS NULL"
    "  AND n.state IN ('pending', 'sending')"
    "  AND " + _STOP_APPLIES.replace("s_state", "$3::text").replace("s_at", "$6::timestamptz") + "),"
    " locked AS (SELECT n.notice_id FROM notices n JOIN open USING (notice_id)"
    "  WHERE n.state IN ('pending', 'sending') ORDER BY n.notice_id FOR UPDATE OF n)"
    " UPDATE notice_items i SET stop_reason = $4, stop_cause_event_id = $5::uuid, stopped_at = now()"
    " FROM locked WHERE i.notice_id = locked.notice_id AND i.invoice_id = $2 AND i.stop_reason IS NULL"
    " RETURNING i.notice_id"
)


async def mark_stopped(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    invoice_id: str,
    state: str,
    reason: str,
    cause_event_id: str,
    stopped_at: datetime,
) -> list[str]:
    """Mark the invoice's items in the notices not sent yet (pending or mid-attempt) with this stop;
    the notices touched."""
    rows = await conn.fetch(_MARK_ITEMS, tenant_id, invoice_id, state, reason, cause_event_id, stopped_at)
    return sorted({r["notice_id"] for r in rows})


# A notice with no unmarked stage item: `cancelled` if pending (`cancel_reason` if mid-attempt), the
# reason being the stop that marked its last stage item.
_CANCEL_EMPTY = (
    "UPDATE notices n SET cancel_reason = last.stop_reason, cancel_cause_event_id = last.stop_cause_event_id,"
    " state = CASE WHEN n.state = 'pending' THEN 'cancelled' ELSE n.state END,"
    " cancelled_at = CASE WHEN n.state = 'pending' THEN now() END, updated_at = now()"
    " FROM (SELECT DISTINCT ON (notice_id) notice_id, stop_reason, stop_cause_event_id FROM notice_items"
    "       WHERE notice_id = ANY($1::text[]) AND stage_id IS NOT NULL"
    "       ORDER BY notice_id, stopped_at DESC NULLS LAST, position DESC) last"
    " WHERE n.notice_id = last.notice_id AND n.state IN ('pending', 'sending') AND n.cancel_reason IS NULL"
    " AND last.stop_reason IS NOT NULL AND NOT EXISTS (SELECT 1 FROM notice_items i"
    "   WHERE i.notice_id = n.notice_id AND i.stage_id IS NOT NULL AND i.stop_reason IS NULL)"
    " RETURNING n.notice_id, n.state"
)


async def cancel_empty(conn: asyncpg.Connection, notice_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Cancel (or mark, mid-attempt) the notices among these with no stage item left."""
    return await conn.fetch(_CANCEL_EMPTY, list(notice_ids)) if notice_ids else []


# What a stage item's Reminder* event says (notices.py builds them), returned by the outcome writes;
# a cancelled item under the names of a cancelled delivery (messages.reminder_cancelled reads both).
_ITEM_EVENT_COLUMNS = (
    "n.notice_id, n.delivery_id, n.tenant_id, n.channel, n.attempts, n.recipient, n.provider_message_id,"
    " n.sent_at, i.invoice_id, i.stage_id, i.stage, i.outcome, i.outcome_at,"
    " i.stop_reason AS cancel_reason, i.stop_cause_event_id AS cancel_cause_event_id, i.outcome_at AS cancelled_at"
)
_SETTLE_ITEMS = (
    "UPDATE notice_items i SET outcome = $3, outcome_at = now()"
    " FROM notices n WHERE n.notice_id = i.notice_id AND i.notice_id = ANY($1::text[])"
    " AND i.stage_id IS NOT NULL AND i.outcome IS NULL AND n.state = ANY($2::text[])"
    " AND CASE WHEN $3 = 'cancelled' THEN i.stop_reason IS NOT NULL"
    "     ELSE i.invoice_id = ANY($4::text[]) END"
    f" RETURNING {_ITEM_EVENT_COLUMNS}"
)


async def cancel_left_out(
    conn: asyncpg.Connection, notice_ids: Sequence[str], states: Sequence[str] = ("pending", "cancelled")
) -> list[asyncpg.Record]:
    """The marked stage items still without an event, of these notices in `states`: now `cancelled`
    (the caller publishes their ReminderCancelled). Mid-attempt notices are left to the outcome."""
    if not notice_ids:
        return []
    return await conn.fetch(_SETTLE_ITEMS, list(notice_ids), list(states), "cancelled", [])


async def settle_included(
    conn: asyncpg.Connection, notice_id: str, outcome: str, invoice_ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The stage items of these invoices (the ones an attempt listed) still without an event: now
    `sent` or `failed` with their notice (the caller publishes ReminderSent / ReminderFailed)."""
    return await conn.fetch(_SETTLE_ITEMS, [notice_id], ["sent", "failed"], outcome, list(invoice_ids))


_CLAIM_DUE = (
    "UPDATE notices n SET state = 'sending', attempts = n.attempts + 1,"
    " claimed_until = now() + make_interval(secs => $2), updated_at = now()"
    " FROM (SELECT x.notice_id, c.name, c.email, c.cc, c.locale, c.timezone, c.phone, c.postal_address"
    "       FROM notices x"
    "       LEFT JOIN contacts c ON c.tenant_id = x.tenant_id AND c.customer_id = x.customer_id"
    "       WHERE x.state = 'pending' AND x.next_attempt_at <= now()"
    "       ORDER BY x.next_attempt_at LIMIT $1 FOR UPDATE OF x SKIP LOCKED) due"
    " WHERE n.notice_id = due.notice_id"
    " RETURNING n.notice_id, n.delivery_id, n.tenant_id, n.customer_id, n.channel, n.recipient, n.attempts,"
    " n.payload, n.traceparent,"
    " due.name AS contact_name, due.email AS contact_email, due.cc AS contact_cc, due.locale AS contact_locale,"
    " due.timezone AS contact_timezone, due.phone AS contact_phone, due.postal_address AS contact_postal_address"
)
_LIVE_ITEMS = (
    "SELECT notice_id, position FROM notice_items WHERE notice_id = ANY($1::text[]) AND stop_reason IS NULL"
    " ORDER BY notice_id, position"
)


async def next_due(conn: asyncpg.Connection) -> float | None:
    """Seconds until the next pending notice falls due (0 or less: due now); None if none is pending."""
    return await conn.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM notices WHERE state = 'pending'"
    )


async def claim_due(
    conn: asyncpg.Connection, limit: int, lease_seconds: float
) -> list[tuple[asyncpg.Record, list[int]]]:
    """Claim up to `limit` due notices, each with the positions of its items no stop has marked (read
    under the claim's row lock: the attempt lists these and no others)."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM_DUE, limit, lease_seconds)
        if not rows:
            return []
        live: dict[str, list[int]] = {r["notice_id"]: [] for r in rows}
        for item in await conn.fetch(_LIVE_ITEMS, list(live)):
            live[item["notice_id"]].append(item["position"])
    return [(r, live[r["notice_id"]]) for r in rows]


_FENCE = " WHERE n.notice_id = $1 AND n.attempts = $2"
_PENDING_UNLESS_CANCELLED = (
    "state = CASE WHEN n.cancel_reason IS NULL THEN 'pending' ELSE 'cancelled' END,"
    " cancelled_at = CASE WHEN n.cancel_reason IS NULL THEN NULL ELSE now() END"
)
_MARK_SENT = (
    "UPDATE notices n SET state = 'sent', provider_message_id = $3, sent_at = $4, recipient = $5, cc = $6,"
    " invoice_ids = $7, left_out = $8, claimed_until = NULL, last_error_code = NULL, last_error = NULL,"
    " updated_at = now()" + _FENCE + " AND n.state IN ('sending', 'pending', 'cancelled') RETURNING n.notice_id"
)
_MARK_FAILED = (
    "UPDATE notices n SET state = 'failed', last_error_code = $3, last_error = $4, recipient = $5, cc = $6,"
    " claimed_until = NULL, updated_at = now()" + _FENCE + " AND n.state IN ('sending', 'pending')"
    " RETURNING n.notice_id"
)
_MARK_RETRY = (
    f"UPDATE notices n SET {_PENDING_UNLESS_CANCELLED}, last_error_code = $3, last_error = $4,"
    " next_attempt_at = now() + make_interval(secs => $5), claimed_until = NULL, updated_at = now(),"
    " in_doubt_attempts = n.in_doubt_attempts + $6::bool::int, recipient = $7, cc = $8"
    + _FENCE
    + " AND n.state IN ('sending', 'pending') RETURNING n.notice_id, n.state"
)


async def mark_sent(
    conn: asyncpg.Connection,
    notice_id: str,
    attempts: int,
    *,
    provider_message_id: str,
    sent_at: datetime,
    recipient: str | None,
    cc: Sequence[str],
    invoice_ids: Sequence[str],
    left_out: Sequence[str],
) -> bool:
    """Sent (also over a notice an expired lease let a stop cancel: it went out); False if the row was
    re-claimed meanwhile (its newer claim's outcome wins)."""
    done = await conn.fetchval(
        _MARK_SENT,
        notice_id,
        attempts,
        provider_message_id,
        sent_at,
        recipient,
        list(cc),
        list(invoice_ids),
        list(left_out),
    )
    return done is not None


async def mark_failed(
    conn: asyncpg.Connection,
    notice_id: str,
    attempts: int,
    *,
    error_code: str,
    error: str,
    recipient: str | None,
    cc: Sequence[str],
) -> bool:
    """Failed for good; False if re-claimed meanwhile."""
    done = await conn.fetchval(_MARK_FAILED, notice_id, attempts, error_code, error, recipient, list(cc))
    return done is not None


async def mark_retry(
    conn: asyncpg.Connection,
    notice_id: str,
    attempts: int,
    *,
    error_code: str,
    error: str,
    delay: float,
    in_doubt: bool,
    recipient: str | None,
    cc: Sequence[str],
) -> str | None:
    """Back to pending after a transient failure (`cancelled` if no stage item is left): the state
    written, None if re-claimed meanwhile."""
    row = await conn.fetchrow(_MARK_RETRY, notice_id, attempts, error_code, error, delay, in_doubt, recipient, list(cc))
    return None if row is None else row["state"]


_RELEASE_EXPIRED = (
    f"UPDATE notices n SET {_PENDING_UNLESS_CANCELLED}, claimed_until = NULL, next_attempt_at = now(),"
    " in_doubt_attempts = n.in_doubt_attempts + 1, last_error_code = 'lease_expired',"
    " last_error = 'the worker sending this notice stopped before recording the outcome', updated_at = now()"
    " WHERE n.state = 'sending' AND n.claimed_until < now() RETURNING n.notice_id, n.state"
)


async def release_expired_leases(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Notices whose worker died mid-send (lease ran out) back to pending (in doubt), or `cancelled`
    if no stage item is left."""
    return await conn.fetch(_RELEASE_EXPIRED)


_NOTICE_COLUMNS = (
    "notice_id, delivery_id, customer_id, channel, composed_at, state, recipient, cc, attempts,"
    " in_doubt_attempts, next_attempt_at, provider_message_id, last_error_code, last_error, sent_at,"
    " invoice_ids, left_out, cancel_reason, cancelled_at"
)


async def get_notice(pool: asyncpg.Pool, tenant_id: str, notice_id: str) -> tuple[asyncpg.Record, list] | None:
    """A tenant's notice and its items in order (the API's view); None if it has none of that id."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_NOTICE_COLUMNS} FROM notices WHERE tenant_id = $1 AND notice_id = $2", tenant_id, notice_id
        )
        if row is None:
            return None
        items = await conn.fetch(
            "SELECT invoice_id, stage_id, stage, stop_reason, outcome FROM notice_items"
            " WHERE notice_id = $1 ORDER BY position",
            notice_id,
        )
    return row, list(items)


_NOTICES_BY_STATE = "SELECT state, count(*) AS n FROM notices GROUP BY state"


async def notice_totals(pool: asyncpg.Pool) -> dict[str, int]:
    """Notices by state, across every replica (/metrics)."""
    return {r["state"]: r["n"] for r in await pool.fetch(_NOTICES_BY_STATE)}
