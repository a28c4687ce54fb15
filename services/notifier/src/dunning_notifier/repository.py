"""SQL for the deliveries and contacts tables. Every write that ends an attempt is fenced by
`attempts`: the claim increments it, so a worker whose lease ran out and was re-claimed elsewhere
cannot overwrite the newer claim's outcome. The claim reads the customer's contacts row with the
delivery (contacts.py), and each outcome write records the addresses that attempt used.

Stops (handlers.py): `apply_stop` cancels an invoice's `pending` deliveries and marks its `sending`
ones with the stop (`cancel_reason`); every statement that would put a delivery back to `pending`
(a retry, an expired lease, a hand-back) reads that mark on the row it updates and makes it
`cancelled` instead, and `delivery_inserts.insert_delivery` records a delivery of a stopped invoice (a terminal stop)
`cancelled`. Each returns the cancelled rows' `_CANCELLED_COLUMNS` (messages.reminder_cancelled)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import orjson

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

_CLAIMED_COLUMNS = ", ".join(
    f"d.{c}"
    for c in (
        "delivery_id",
        "tenant_id",
        "invoice_id",
        "stage_id",
        "stage",
        "channel",
        "recipient",
        "attempts",
        "payload",
        "traceparent",
    )
)
# The contacts row found by the claim (all null when the customer has none): contacts.current.
_CONTACT_COLUMNS = "".join(
    f", due.{c} AS contact_{c}" for c in ("name", "email", "cc", "locale", "timezone", "phone", "postal_address")
)
_API_COLUMNS = (
    "delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template, recipient, cc, state,"
    " attempts, in_doubt_attempts, last_in_doubt_at, next_attempt_at, provider_message_id,"
    " last_error_code, last_error, created_at, updated_at, sent_at, cancel_reason, cancelled_at,"
    " fallback_of, provider_status"  # optouts.py: the delivery this one stands in for; a DSN's `bounced`
    ", provider_status_at, sms_encoding, sms_segments"  # sms.py, sms_api.py: Twilio's status callbacks
)
# What a ReminderCancelled says (messages.reminder_cancelled), returned by every statement that cancels.
_CANCELLED_COLUMNS = (
    "d.delivery_id, d.state, d.stage_id, d.invoice_id, d.tenant_id, d.stage, d.channel, d.attempts,"
    " d.cancel_reason, d.cancel_cause_event_id, d.cancelled_at"
)
# The state a delivery goes back to for another attempt: `cancelled` instead if a stop marked it.
_PENDING_UNLESS_STOPPED = (
    "state = CASE WHEN d.cancel_reason IS NULL THEN 'pending' ELSE 'cancelled' END,"
    " cancelled_at = CASE WHEN d.cancel_reason IS NULL THEN NULL ELSE now() END"
)


_RELEASE_EXPIRED_LEASES = (
    f"UPDATE deliveries d SET {_PENDING_UNLESS_STOPPED}, claimed_until = NULL, next_attempt_at = now(),"
    " in_doubt_attempts = d.in_doubt_attempts + 1, last_in_doubt_at = now(),"
    " last_error_code = 'lease_expired',"
    " last_error = 'the worker sending this delivery stopped before recording the outcome',"
    " updated_at = now()"
    " WHERE d.state = 'sending' AND d.claimed_until < now()"
    f" RETURNING {_CANCELLED_COLUMNS}, d.in_doubt_attempts"
)


async def release_expired_leases(conn: Executor) -> list[asyncpg.Record]:
    """Put deliveries whose worker died or stalled mid-send (lease ran out) back to pending, due now
    (`cancelled` if a stop marked them meanwhile: the caller publishes their ReminderCancelled).

    The attempt they were on is in doubt: the SMTP server may have accepted the message before the
    worker stopped, so the next attempt may deliver a second copy. That is counted in the same
    statement that takes the row back, so no reclaim goes uncounted (this is the only statement that
    takes a `sending` row away from its worker)."""
    return await conn.fetch(_RELEASE_EXPIRED_LEASES)


_CLAIM_DUE = (
    "UPDATE deliveries d SET state = 'sending', attempts = d.attempts + 1,"
    " claimed_until = now() + make_interval(secs => $2), updated_at = now()"
    " FROM (SELECT x.delivery_id, c.name, c.email, c.cc, c.locale, c.timezone, c.phone, c.postal_address"
    "       FROM deliveries x"
    "       LEFT JOIN contacts c ON c.tenant_id = x.tenant_id AND c.customer_id = x.customer_id"
    "       WHERE x.state = 'pending' AND x.next_attempt_at <= now()"
    "       ORDER BY x.next_attempt_at LIMIT $1 FOR UPDATE OF x SKIP LOCKED) due"
    f" WHERE d.delivery_id = due.delivery_id RETURNING {_CLAIMED_COLUMNS}{_CONTACT_COLUMNS}"
)


_NEXT_DUE = "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM deliveries WHERE state = 'pending'"


async def next_due(conn: Executor) -> float | None:
    """Seconds until the next pending delivery falls due (0 or less: due now); None if none is pending."""
    return await conn.fetchval(_NEXT_DUE)


async def claim_due(conn: Executor, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    """Claim up to `limit` due pending deliveries (safe with several replicas: SKIP LOCKED), each
    with its customer's contacts row as it is now (`contact_*` columns, null without one)."""
    return await conn.fetch(_CLAIM_DUE, limit, lease_seconds)


_RELEASE_CLAIMS = (
    f"UPDATE deliveries d SET {_PENDING_UNLESS_STOPPED}, attempts = d.attempts - 1, claimed_until = NULL,"
    " updated_at = now()"
    " FROM unnest($1::text[], $2::int[]) AS u(id, attempts)"
    " WHERE d.delivery_id = u.id AND d.state = 'sending' AND d.attempts = u.attempts"
    f" RETURNING {_CANCELLED_COLUMNS}"
)


async def release_claims(conn: asyncpg.Connection, claims: Sequence[tuple[str, int]]) -> list[asyncpg.Record]:
    """Hand back claimed deliveries that were never attempted (shutdown): pending, attempt not counted
    (`cancelled` if a stop marked them meanwhile: the caller publishes their ReminderCancelled)."""
    if not claims:
        return []
    ids, attempts = zip(*claims, strict=True)
    return await conn.fetch(_RELEASE_CLAIMS, list(ids), list(attempts))


# A worker may record its outcome even if its lease ran out, as long as nobody re-claimed the row
# (same attempts): the send happened, and recording it prevents a duplicate.
_FENCE = " WHERE d.delivery_id = u.id AND d.attempts = u.attempts AND d.state IN ('sending', 'pending')"
# A send is recorded even on a row a stop cancelled after its lease ran out (the truth: it went out,
# in doubt); a failure or retry leaves such a row cancelled.
_FENCE_SENT = _FENCE.replace("'pending')", "'pending', 'cancelled')")


# Every outcome write also records the addresses its attempt used, the last two fields of each row:
# To, and the CCs (passed as one JSON array per row: unnest cannot take an array of arrays).
_ADDRESSES = ", recipient = u.recipient, cc = ARRAY(SELECT jsonb_array_elements_text(u.cc::jsonb))"


async def _record_outcomes(
    conn: asyncpg.Connection, statement: str, rows: Sequence[tuple[Any, ...]]
) -> list[asyncpg.Record]:
    """Run one of the fenced outcome statements below over `rows` (an array per column, in the order of
    its unnest); the rows of the deliveries it recorded (the others were re-claimed meanwhile)."""
    if not rows:
        return []
    *columns, cc = (list(column) for column in zip(*rows, strict=True))
    return await conn.fetch(statement, *columns, [orjson.dumps(list(copies)).decode() for copies in cc])


_MARK_SENT = (
    "UPDATE deliveries d SET state = 'sent', provider_message_id = u.pmid, sent_at = u.sent_at,"
    " claimed_until = NULL, last_error_code = NULL, last_error = NULL, updated_at = now()"
    + _ADDRESSES
    + " FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])"
    " AS u(id, attempts, pmid, sent_at, recipient, cc)" + _FENCE_SENT + " RETURNING d.delivery_id"
)


async def mark_sent(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, int, str, datetime, str | None, Sequence[str]]]
) -> set[str]:
    """Sent: (delivery id, attempts, provider message id, sent at, To, Cc)."""
    return {r["delivery_id"] for r in await _record_outcomes(conn, _MARK_SENT, rows)}


_MARK_FAILED = (
    "UPDATE deliveries d SET state = 'failed', last_error_code = u.code, last_error = u.error,"
    " claimed_until = NULL, updated_at = now()"
    + _ADDRESSES
    + " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])"
    " AS u(id, attempts, code, error, recipient, cc)" + _FENCE + " RETURNING d.delivery_id"
)


async def mark_failed(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, int, str, str, str | None, Sequence[str]]]
) -> set[str]:
    """Failed for good: (delivery id, attempts, error code, error, To, Cc)."""
    return {r["delivery_id"] for r in await _record_outcomes(conn, _MARK_FAILED, rows)}


_MARK_RETRY = (
    f"UPDATE deliveries d SET {_PENDING_UNLESS_STOPPED}, last_error_code = u.code, last_error = u.error,"
    " next_attempt_at = now() + make_interval(secs => u.delay), claimed_until = NULL, updated_at = now(),"
    " in_doubt_attempts = d.in_doubt_attempts + u.in_doubt::int,"
    " last_in_doubt_at = CASE WHEN u.in_doubt THEN now() ELSE d.last_in_doubt_at END"
    + _ADDRESSES
    + " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::bool[], $7::text[], $8::text[])"
    " AS u(id, attempts, code, error, delay, in_doubt, recipient, cc)" + _FENCE + f" RETURNING {_CANCELLED_COLUMNS}"
)


async def mark_retry(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, int, str, str, float, bool, str | None, Sequence[str]]]
) -> list[asyncpg.Record]:
    """Back to pending after a transient failure: (delivery id, attempts, error code, error, delay,
    in doubt, To, Cc); `in doubt` when the server may have accepted the message all the same (timeout
    or disconnect after DATA). A delivery a stop marked mid-attempt becomes `cancelled` instead: the
    rows recorded, with their state (`_CANCELLED_COLUMNS`)."""
    return await _record_outcomes(conn, _MARK_RETRY, rows)


# One stop of an invoice: remembered (a terminal stop replaces a pause, nothing replaces a terminal
# stop, a second pause keeps the first), its `pending` deliveries cancelled, its `sending` ones marked.
# The rows are locked in id order (the recorder writes its batches in id order too: fewer deadlocks
# between the two; one that happens is retried by either side).
_APPLY_STOP = (
    "WITH stop AS ("
    "  INSERT INTO invoice_stops (tenant_id, invoice_id, state, reason, cause_event_id, stopped_at)"
    "  VALUES ($1, $2, $3, $4, $5, $6)"
    "  ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET state = excluded.state, reason = excluded.reason,"
    "  cause_event_id = excluded.cause_event_id, stopped_at = excluded.stopped_at, applied_at = now()"
    "  WHERE invoice_stops.state = 'paused' AND excluded.state = 'stopped'),"
    " open AS (SELECT delivery_id FROM deliveries WHERE tenant_id = $1 AND invoice_id = $2"
    "  AND state IN ('pending', 'sending') AND NOT (stage = 'handed_over' AND $4 = 'with_agency')"  # agency.py
    "  ORDER BY delivery_id FOR UPDATE)"
    " UPDATE deliveries d SET state = CASE WHEN d.state = 'pending' THEN 'cancelled' ELSE d.state END,"
    " cancelled_at = CASE WHEN d.state = 'pending' THEN now() END,"
    " cancel_reason = $4, cancel_cause_event_id = $5, updated_at = now()"
    " FROM open WHERE d.delivery_id = open.delivery_id AND d.state IN ('pending', 'sending')"
    f" RETURNING {_CANCELLED_COLUMNS}"
)


async def apply_stop(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    invoice_id: str,
    state: str,
    reason: str,
    cause_event_id: str,
    stopped_at: datetime,
) -> list[asyncpg.Record]:
    """Apply a stop (`state` stopped: terminal; paused: until resume) to an invoice's deliveries: the
    ones it cancelled (state `cancelled`) and the ones it found mid-attempt (`sending`, now marked)."""
    return await conn.fetch(_APPLY_STOP, tenant_id, invoice_id, state, reason, cause_event_id, stopped_at)


_RESUME = "DELETE FROM invoice_stops WHERE tenant_id = $1 AND invoice_id = $2 AND state = 'paused' RETURNING reason"


async def resume(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> str | None:
    """Forget an invoice's pause (a terminal stop stays); the pause's reason, None if it had none."""
    return await conn.fetchval(_RESUME, tenant_id, invoice_id)


# A settled invoice reopened (issue 11: money taken back; the scheduler's DunningResumed with cause
# `settled`): the stop that settled it is forgotten with any pause, so the stages planned again go out.
_REOPEN = (
    "DELETE FROM invoice_stops WHERE tenant_id = $1 AND invoice_id = $2"
    " AND (state = 'paused' OR reason IN ('invoice_settled', 'invoice_credited')) RETURNING reason"
)


async def reopen(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> str | None:
    """Forget a reopened invoice's settling stop (a void or write-off stays); its reason, None if none."""
    return await conn.fetchval(_REOPEN, tenant_id, invoice_id)


_UPSERT_CONTACT = (
    "INSERT INTO contacts (tenant_id, customer_id, name, email, cc, locale, timezone, version, updated_at, phone,"
    " postal_address)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT (tenant_id, customer_id) DO UPDATE SET name = excluded.name, email = excluded.email,"
    " cc = excluded.cc, locale = excluded.locale, timezone = excluded.timezone, version = excluded.version,"
    " updated_at = excluded.updated_at, phone = excluded.phone, postal_address = excluded.postal_address"
    " WHERE contacts.version < excluded.version"
    " RETURNING version"
)


async def upsert_contact(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    customer_id: str,
    name: str,
    email: str,
    cc: Sequence[str],
    locale: str,
    timezone: str,
    version: int,
    updated_at: datetime,
    phone: str | None = None,
    postal_address: dict[str, Any] | None = None,
) -> bool:
    """Hold this version of the customer's contacts; False (nothing changed) if the row already holds
    this version or a newer one (a replay, or an update that arrived after a later one)."""
    applied = await conn.fetchval(
        _UPSERT_CONTACT,
        tenant_id,
        customer_id,
        name,
        email,
        list(cc),
        locale,
        timezone,
        version,
        updated_at,
        phone,
        postal_address,
    )
    return applied is not None


_LIST_DELIVERIES = (
    f"SELECT {_API_COLUMNS} FROM deliveries WHERE tenant_id = $1"
    " AND ($2::text IS NULL OR invoice_id = $2) AND ($3::text IS NULL OR state = $3)"
    " AND ($4::text IS NULL OR delivery_id < $4)"
    " ORDER BY delivery_id DESC LIMIT $5"
)


async def list_deliveries(
    pool: asyncpg.Pool, tenant_id: str, *, invoice_id: str | None, state: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    """A tenant's deliveries, newest first (delivery ids are time-ordered: `before` pages back)."""
    return await pool.fetch(
        _LIST_DELIVERIES,
        tenant_id,
        invoice_id,
        state,
        before,
        limit,
    )


_GET_DELIVERY = f"SELECT {_API_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND delivery_id = $2"


async def get_delivery(pool: asyncpg.Pool, tenant_id: str, delivery_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(_GET_DELIVERY, tenant_id, delivery_id)


_DELIVERY_TOTALS = (
    "SELECT channel, state, count(*) AS n, count(*) FILTER (WHERE in_doubt_attempts > 0) AS in_doubt,"
    " coalesce(sum(in_doubt_attempts), 0) AS in_doubt_attempts FROM deliveries GROUP BY channel, state"
)


async def delivery_totals(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """For /metrics, across every replica, per (channel, state): deliveries, those with an in-doubt
    attempt (each channel's provider window: a timeout after the request went out), and their in-doubt
    attempts. One read of the whole table (fine at a scrape every few seconds up to a few million rows)."""
    return await pool.fetch(_DELIVERY_TOTALS)
