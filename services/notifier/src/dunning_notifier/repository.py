"""SQL for the deliveries and contacts tables. Every write that ends an attempt is fenced by
`attempts`: the claim increments it, so a worker whose lease ran out and was re-claimed elsewhere
cannot overwrite the newer claim's outcome. The claim reads the customer's contacts row with the
delivery (contacts.py), and each outcome write records the addresses that attempt used."""

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
_CONTACT_COLUMNS = "".join(f", due.{c} AS contact_{c}" for c in ("name", "email", "cc", "locale", "timezone"))
_API_COLUMNS = (
    "delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template, recipient, cc, state,"
    " attempts, in_doubt_attempts, last_in_doubt_at, next_attempt_at, provider_message_id,"
    " last_error_code, last_error, created_at, updated_at, sent_at"
)


_INSERT_DELIVERY = (
    "INSERT INTO deliveries (delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template,"
    " recipient, payload, source_event_id, traceparent, customer_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    " ON CONFLICT (tenant_id, invoice_id, stage, channel) DO NOTHING RETURNING delivery_id"
)


async def insert_delivery(
    conn: asyncpg.Connection,
    *,
    delivery_id: str,
    tenant_id: str,
    invoice_id: str,
    stage_id: str,
    stage: str,
    channel: str,
    template: str,
    recipient: str | None,
    payload: dict[str, Any],
    source_event_id: str,
    traceparent: str | None,
) -> str | None:
    """Record a delivery to make; None if this (invoice, stage, channel) already has one. Its
    customer (whose current contacts the dispatcher looks up) is the payload's."""
    customer_id = (payload.get("customer") or {}).get("customer_id")
    return await conn.fetchval(
        _INSERT_DELIVERY,
        delivery_id,
        tenant_id,
        invoice_id,
        stage_id,
        stage,
        channel,
        template,
        recipient,
        payload,
        source_event_id,
        traceparent,
        customer_id,
    )


_RELEASE_EXPIRED_LEASES = (
    "UPDATE deliveries SET state = 'pending', claimed_until = NULL, next_attempt_at = now(),"
    " in_doubt_attempts = in_doubt_attempts + 1, last_in_doubt_at = now(),"
    " last_error_code = 'lease_expired',"
    " last_error = 'the worker sending this delivery stopped before recording the outcome',"
    " updated_at = now()"
    " WHERE state = 'sending' AND claimed_until < now()"
    " RETURNING delivery_id, tenant_id, invoice_id, stage, channel, attempts, in_doubt_attempts"
)


async def release_expired_leases(conn: Executor) -> list[asyncpg.Record]:
    """Put deliveries whose worker died or stalled mid-send (lease ran out) back to pending, due now.

    The attempt they were on is in doubt: the SMTP server may have accepted the message before the
    worker stopped, so the next attempt may deliver a second copy. That is counted in the same
    statement that takes the row back, so no reclaim goes uncounted (this is the only statement that
    takes a `sending` row away from its worker)."""
    return await conn.fetch(_RELEASE_EXPIRED_LEASES)


_CLAIM_DUE = (
    "UPDATE deliveries d SET state = 'sending', attempts = d.attempts + 1,"
    " claimed_until = now() + make_interval(secs => $2), updated_at = now()"
    " FROM (SELECT x.delivery_id, c.name, c.email, c.cc, c.locale, c.timezone FROM deliveries x"
    "       LEFT JOIN contacts c ON c.tenant_id = x.tenant_id AND c.customer_id = x.customer_id"
    "       WHERE x.state = 'pending' AND x.next_attempt_at <= now()"
    "       ORDER BY x.next_attempt_at LIMIT $1 FOR UPDATE OF x SKIP LOCKED) due"
    f" WHERE d.delivery_id = due.delivery_id RETURNING {_CLAIMED_COLUMNS}{_CONTACT_COLUMNS}"
)


async def claim_due(conn: Executor, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    """Claim up to `limit` due pending deliveries (safe with several replicas: SKIP LOCKED), each
    with its customer's contacts row as it is now (`contact_*` columns, null without one)."""
    return await conn.fetch(_CLAIM_DUE, limit, lease_seconds)


_RELEASE_CLAIMS = (
    "UPDATE deliveries d SET state = 'pending', attempts = d.attempts - 1, claimed_until = NULL,"
    " updated_at = now()"
    " FROM unnest($1::text[], $2::int[]) AS u(id, attempts)"
    " WHERE d.delivery_id = u.id AND d.state = 'sending' AND d.attempts = u.attempts"
)


async def release_claims(conn: asyncpg.Connection, claims: Sequence[tuple[str, int]]) -> None:
    """Hand back claimed deliveries that were never attempted (shutdown): pending, attempt not counted."""
    if not claims:
        return
    ids, attempts = zip(*claims, strict=True)
    await conn.execute(_RELEASE_CLAIMS, list(ids), list(attempts))


# A worker may record its outcome even if its lease ran out, as long as nobody re-claimed the row
# (same attempts): the send happened, and recording it prevents a duplicate.
_FENCE = " WHERE d.delivery_id = u.id AND d.attempts = u.attempts AND d.state IN ('sending', 'pending')"


# Every outcome write also records the addresses its attempt used, the last two fields of each row:
# To, and the CCs (passed as one JSON array per row: unnest cannot take an array of arrays).
_ADDRESSES = ", recipient = u.recipient, cc = ARRAY(SELECT jsonb_array_elements_text(u.cc::jsonb))"


async def _record_outcomes(conn: asyncpg.Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> set[str]:
    """Run one of the fenced outcome statements below over `rows` (an array per column, in the order of
    its unnest); the ids of the deliveries it recorded (the others were re-claimed meanwhile)."""
    if not rows:
        return set()
    *columns, cc = (list(column) for column in zip(*rows, strict=True))
    done = await conn.fetch(statement, *columns, [orjson.dumps(list(copies)).decode() for copies in cc])
    return {r["delivery_id"] for r in done}


_MARK_SENT = (
    "UPDATE deliveries d SET state = 'sent', provider_message_id = u.pmid, sent_at = u.sent_at,"
    " claimed_until = NULL, last_error_code = NULL, last_error = NULL, updated_at = now()"
    + _ADDRESSES
    + " FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])"
    " AS u(id, attempts, pmid, sent_at, recipient, cc)" + _FENCE + " RETURNING d.delivery_id"
)


async def mark_sent(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, int, str, datetime, str | None, Sequence[str]]]
) -> set[str]:
    """Sent: (delivery id, attempts, provider message id, sent at, To, Cc)."""
    return await _record_outcomes(conn, _MARK_SENT, rows)


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
    return await _record_outcomes(conn, _MARK_FAILED, rows)


_MARK_RETRY = (
    "UPDATE deliveries d SET state = 'pending', last_error_code = u.code, last_error = u.error,"
    " next_attempt_at = now() + make_interval(secs => u.delay), claimed_until = NULL, updated_at = now(),"
    " in_doubt_attempts = d.in_doubt_attempts + u.in_doubt::int,"
    " last_in_doubt_at = CASE WHEN u.in_doubt THEN now() ELSE d.last_in_doubt_at END"
    + _ADDRESSES
    + " FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::float8[], $6::bool[], $7::text[], $8::text[])"
    " AS u(id, attempts, code, error, delay, in_doubt, recipient, cc)" + _FENCE + " RETURNING d.delivery_id"
)


async def mark_retry(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, int, str, str, float, bool, str | None, Sequence[str]]]
) -> set[str]:
    """Back to pending after a transient failure: (delivery id, attempts, error code, error, delay,
    in doubt, To, Cc); `in doubt` when the server may have accepted the message all the same (timeout
    or disconnect after DATA)."""
    return await _record_outcomes(conn, _MARK_RETRY, rows)


_UPSERT_CONTACT = (
    "INSERT INTO contacts (tenant_id, customer_id, name, email, cc, locale, timezone, version, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (tenant_id, customer_id) DO UPDATE SET name = excluded.name, email = excluded.email,"
    " cc = excluded.cc, locale = excluded.locale, timezone = excluded.timezone, version = excluded.version,"
    " updated_at = excluded.updated_at"
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
) -> bool:
    """Hold this version of the customer's contacts; False (nothing changed) if the row already holds
    this version or a newer one (a replay, or an update that arrived after a later one)."""
    applied = await conn.fetchval(
        _UPSERT_CONTACT, tenant_id, customer_id, name, email, list(cc), locale, timezone, version, updated_at
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


_DELIVERIES_BY_STATE = "SELECT state, count(*) AS n FROM deliveries GROUP BY state"
_IN_DOUBT_TOTALS = (
    "SELECT count(*) AS deliveries, coalesce(sum(in_doubt_attempts), 0) AS attempts"
    " FROM deliveries WHERE in_doubt_attempts > 0"
)


async def delivery_totals(pool: asyncpg.Pool) -> tuple[dict[str, int], int, int]:
    """For /metrics, across every replica: deliveries by state, deliveries with an in-doubt attempt,
    and in-doubt attempts in all. The count by state reads the whole table (fine at a scrape every
    few seconds up to a few million rows); the in-doubt sums read only the partial index's rows."""
    by_state = {r["state"]: r["n"] for r in await pool.fetch(_DELIVERIES_BY_STATE)}
    row = await pool.fetchrow(_IN_DOUBT_TOTALS)
    return by_state, row["deliveries"], row["attempts"]
