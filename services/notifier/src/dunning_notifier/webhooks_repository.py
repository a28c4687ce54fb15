"""SQL for outbound webhooks: endpoints, messages and attempts (webhooks*.py; docs/webhooks.md).

A message is claimed like a delivery (dispatcher.py): `pending` and due, its endpoint enabled, taken
FOR UPDATE SKIP LOCKED and set `sending` with a lease and `attempts + 1`; the outcome write is fenced
by `attempts`, so a worker whose lease ran out cannot overwrite a newer claim's outcome. NOTIFY on
`webhook_messages` wakes the sender when a message is recorded or replayed (delivered on commit).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection
WAKE_CHANNEL = "webhook_messages"

_ENDPOINT_COLUMNS = (
    "endpoint_id, tenant_id, url, description, event_types, enabled, disabled_reason, disabled_at,"
    " previous_expires_at, consecutive_failures, failing_since, created_at, updated_at"
)
_ENDPOINT_COLUMNS_E = ", ".join("e." + c.strip() for c in _ENDPOINT_COLUMNS.split(","))
_MESSAGE_COLUMNS = (
    "message_id, tenant_id, endpoint_id, event_type, source_event_id::text AS source_event_id, body, state,"
    " attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at, delivered_at"
)
_ATTEMPT_COLUMNS = (
    "attempt_id, endpoint_id, message_id, delivery_id, trigger, attempted_at, status_code, response_snippet,"
    " duration_ms, error"
)


# --- endpoints ---------------------------------------------------------------------------------


async def insert_endpoint(
    db: Executor, *, endpoint_id: str, tenant_id: str, url: str, description: str, event_types: list[str], secret: str
) -> asyncpg.Record:
    return await db.fetchrow(
        "INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, description, event_types, secret)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}",
        endpoint_id,
        tenant_id,
        url,
        description,
        event_types,
        secret,
    )


async def get_endpoint(db: Executor, tenant_id: str, endpoint_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
        tenant_id,
        endpoint_id,
    )


async def list_endpoints(db: Executor, tenant_id: str, *, before: str | None, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1"
        " AND ($2::text IS NULL OR endpoint_id < $2) ORDER BY endpoint_id DESC LIMIT $3",
        tenant_id,
        before,
        limit,
    )


async def update_endpoint(
    db: Executor,
    tenant_id: str,
    endpoint_id: str,
    *,
    url: str | None,
    description: str | None,
    event_types: list[str] | None,
    enabled: bool | None,
) -> asyncpg.Record | None:
    """Changes what is given. Enabling clears the disabled state and the failure counters."""
    return await db.fetchrow(
        "UPDATE webhook_endpoints SET url = coalesce($3, url), description = coalesce($4, description),"
        " event_types = coalesce($5, event_types), enabled = coalesce($6, enabled),"
        " disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason WHEN $6 THEN NULL ELSE 'disabled_by_tenant' END,"
        " disabled_at = CASE WHEN $6 IS NULL THEN disabled_at WHEN $6 THEN NULL"
        "   WHEN enabled THEN now() ELSE disabled_at END,"
        " consecutive_failures = CASE WHEN $6 THEN 0 ELSE consecutive_failures END,"
        " failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,"
        f" updated_at = now() WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING {_ENDPOINT_COLUMNS}",
        tenant_id,
        endpoint_id,
        url,
        description,
        event_types,
        enabled,
    )


async def delete_endpoint(db: Executor, tenant_id: str, endpoint_id: str) -> bool:
    row = await db.fetchrow(
        "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING endpoint_id",
        tenant_id,
        endpoint_id,
    )
    return row is not None


async def rotate_secret(
    db: Executor, tenant_id: str, endpoint_id: str, secret: str, overlap_seconds: float
) -> asyncpg.Record | None:
    """The new secret signs from now; the old one too, until the overlap ends."""
    return await db.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,"
        " previous_expires_at = now() + $4 * interval '1 second', updated_at = now()"
        f" WHERE tenant_id = $1 AND endpoint_id = $2 RETURNING {_ENDPOINT_COLUMNS}",
        tenant_id,
        endpoint_id,
        secret,
        overlap_seconds,
    )


async def subscribed(conn: Executor, tenant_id: str, event_type: str) -> list[asyncpg.Record]:
    """The tenant's enabled endpoints subscribed to a public event type, with what signs for them."""
    return await conn.fetch(
        "SELECT endpoint_id, url, secret, previous_secret, previous_expires_at FROM webhook_endpoints"
        " WHERE tenant_id = $1 AND enabled AND $2 = ANY(event_types) ORDER BY endpoint_id",
        tenant_id,
        event_type,
    )


_SUBSCRIBED_MANY = (
    "SELECT w.tenant_id, t.event_type, w.endpoint_id FROM webhook_endpoints w"
    " JOIN unnest($1::text[], $2::text[]) AS t(tenant_id, event_type)"
    " ON w.tenant_id = t.tenant_id AND t.event_type = ANY(w.event_types)"
    " WHERE w.enabled ORDER BY w.endpoint_id"
)


async def subscribed_many(conn: Executor, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """`subscribed` for many (tenant, public type) pairs in one query: each pair's enabled endpoint ids,
    in endpoint id order (pairs with none are absent)."""
    found: dict[tuple[str, str], list[str]] = {}
    if pairs:
        tenants, types = zip(*pairs, strict=True)
        for row in await conn.fetch(_SUBSCRIBED_MANY, list(tenants), list(types)):
            found.setdefault((row["tenant_id"], row["event_type"]), []).append(row["endpoint_id"])
    return found


# --- messages ----------------------------------------------------------------------------------


async def insert_messages(conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str, str, str, str]]) -> int:
    """(message_id, tenant_id, endpoint_id, event_type, source_event_id, body) rows; one per (event,
    endpoint), never two. Wakes the sender on commit."""
    if not rows:
        return 0
    inserted = await conn.fetch(
        "INSERT INTO webhook_messages (message_id, tenant_id, endpoint_id, event_type, source_event_id, body)"
        " SELECT m, t, e, ty, s::uuid, b FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::text[]) AS u(m, t, e, ty, s, b)"
        " ON CONFLICT (endpoint_id, source_event_id) DO NOTHING RETURNING message_id",
        *[list(column) for column in zip(*rows, strict=True)],
    )
    if inserted:
        await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return len(inserted)


async def get_message(db: Executor, tenant_id: str, message_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM webhook_messages WHERE tenant_id = $1 AND message_id = $2",
        tenant_id,
        message_id,
    )


async def list_messages(
    db: Executor,
    tenant_id: str,
    *,
    event_type: str | None,
    state: str | None,
    endpoint_id: str | None,
    before: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM webhook_messages WHERE tenant_id = $1"
        " AND ($2::text IS NULL OR event_type = $2) AND ($3::text IS NULL OR state = $3)"
        " AND ($4::text IS NULL OR endpoint_id = $4) AND ($5::text IS NULL OR message_id < $5)"
        " ORDER BY message_id DESC LIMIT $6",
        tenant_id,
        event_type,
        state,
        endpoint_id,
        before,
        limit,
    )


async def replay(conn: asyncpg.Connection, tenant_id: str, message_id: str) -> asyncpg.Record | None:
    """The message due again now with a fresh retry budget (not while an attempt is in flight)."""
    row = await conn.fetchrow(
        "UPDATE webhook_messages SET state = 'pending', next_attempt_at = now(), budget_from = attempts,"
        " next_trigger = 'replay', updated_at = now()"
        f" WHERE tenant_id = $1 AND message_id = $2 AND state <> 'sending' RETURNING {_MESSAGE_COLUMNS}",
        tenant_id,
        message_id,
    )
    if row is not None:
        await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return row


async def claim_due(conn: asyncpg.Connection, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    return await conn.fetch(
        "WITH due AS (SELECT m.message_id, m.next_trigger FROM webhook_messages m"
        "  JOIN webhook_endpoints e USING (endpoint_id)"
        "  WHERE m.state = 'pending' AND m.next_attempt_at <= now() AND e.enabled"
        "  ORDER BY m.next_attempt_at LIMIT $1 FOR UPDATE OF m SKIP LOCKED),"
        " claimed AS (UPDATE webhook_messages m SET state = 'sending', attempts = m.attempts + 1,"
        "  lease_until = now() + $2 * interval '1 second', next_trigger = 'scheduled', updated_at = now()"
        "  FROM due WHERE m.message_id = due.message_id"
        "  RETURNING m.message_id, m.tenant_id, m.endpoint_id, m.event_type, m.body, m.attempts, m.budget_from,"
        "  due.next_trigger AS trigger)"
        " SELECT c.*, e.url, e.secret, e.previous_secret, e.previous_expires_at"
        " FROM claimed c JOIN webhook_endpoints e USING (endpoint_id)",
        limit,
        lease_seconds,
    )


async def release_expired_leases(conn: asyncpg.Connection) -> int:
    """Messages whose sender stalled past its lease: due again (the attempt may have gone out)."""
    result = await conn.execute(
        "UPDATE webhook_messages SET state = 'pending', next_attempt_at = now(), updated_at = now()"
        " WHERE state = 'sending' AND lease_until < now()"
    )
    return int(result.split()[-1])


async def lock_endpoint(conn: asyncpg.Connection, endpoint_id: str) -> None:
    """The endpoint's row lock, taken before its message's: the order a DELETE of the endpoint takes
    them in (its messages go by cascade), and the attempt's foreign key then only shares a lock held."""
    await conn.execute("SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1 FOR UPDATE", endpoint_id)


async def finish_message(
    conn: asyncpg.Connection,
    message_id: str,
    attempts: int,
    *,
    state: str,
    status_code: int | None,
    error: str | None,
    retry_in: float | None,
) -> bool:
    """The claim's outcome (delivered, failed, or pending again in `retry_in` s); fenced by attempts."""
    row = await conn.fetchrow(
        "UPDATE webhook_messages SET state = $3, last_status_code = $4, last_error = $5,"
        " next_attempt_at = CASE WHEN $6::float8 IS NULL THEN next_attempt_at"
        "   ELSE now() + $6::float8 * interval '1 second' END,"
        " delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END,"
        " lease_until = NULL, updated_at = now()"
        " WHERE message_id = $1 AND attempts = $2 AND state = 'sending' RETURNING message_id",
        message_id,
        attempts,
        state,
        status_code,
        error,
        retry_in,
    )
    return row is not None


# --- attempts and the endpoint's health --------------------------------------------------------


async def insert_attempt(
    conn: Executor,
    *,
    attempt_id: str,
    tenant_id: str,
    endpoint_id: str,
    message_id: str | None,
    delivery_id: str | None,
    trigger: str,
    attempted_at: datetime,
    status_code: int | None,
    response_snippet: str | None,
    duration_ms: int,
    error: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO webhook_attempts (attempt_id, tenant_id, endpoint_id, message_id, delivery_id, trigger,"
        " attempted_at, status_code, response_snippet, duration_ms, error)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT DO NOTHING",  # an endpoint deleted meanwhile: its attempts go with it (FK)
        attempt_id,
        tenant_id,
        endpoint_id,
        message_id,
        delivery_id,
        trigger,
        attempted_at,
        status_code,
        response_snippet,
        duration_ms,
        error,
    )


async def list_attempts(
    db: Executor, tenant_id: str, endpoint_id: str, *, message_id: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE tenant_id = $1 AND endpoint_id = $2"
        " AND ($3::text IS NULL OR message_id = $3) AND ($4::text IS NULL OR attempt_id < $4)"
        " ORDER BY attempt_id DESC LIMIT $5",
        tenant_id,
        endpoint_id,
        message_id,
        before,
        limit,
    )


async def note_health(
    conn: asyncpg.Connection,
    endpoint_id: str,
    *,
    ok: bool,
    message_failed: bool,
    at: datetime,
    max_failures: int,
    max_failing_seconds: float,
) -> asyncpg.Record | None:
    """After an attempt: a 2xx clears the endpoint's failure streak; a failure starts or extends it,
    and a message that failed for good counts one more. Past either limit the endpoint is disabled
    (state, reason, when); the row is returned when this call disabled it."""
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints e SET consecutive_failures = x.failures, failing_since = x.since,"
        " enabled = e.enabled AND NOT x.tripped,"
        " disabled_at = CASE WHEN e.enabled AND x.tripped THEN now() ELSE e.disabled_at END,"
        " disabled_reason = CASE WHEN NOT (e.enabled AND x.tripped) THEN e.disabled_reason"
        "   WHEN x.failures >= $5 THEN 'failing: ' || x.failures || ' messages in a row failed for good'"
        "   ELSE 'failing: every attempt failed since ' || to_char(x.since AT TIME ZONE 'UTC',"
        '   \'YYYY-MM-DD"T"HH24:MI:SS"Z"\') END,'
        " updated_at = CASE WHEN e.enabled AND x.tripped THEN now() ELSE e.updated_at END"
        " FROM (SELECT endpoint_id, enabled AS was_enabled, failures, since,"
        "   NOT $2 AND (failures >= $5 OR since <= now() - $6 * interval '1 second') AS tripped"
        "   FROM (SELECT endpoint_id, enabled,"
        "     CASE WHEN $2 THEN 0 ELSE consecutive_failures + $3::int END AS failures,"
        "     CASE WHEN $2 THEN NULL ELSE coalesce(failing_since, $4) END AS since"
        "     FROM webhook_endpoints WHERE endpoint_id = $1 FOR UPDATE) y) x"
        " WHERE e.endpoint_id = x.endpoint_id"
        f" RETURNING x.was_enabled AND x.tripped AS disabled_now, {_ENDPOINT_COLUMNS_E}",
        endpoint_id,
        ok,
        1 if message_failed else 0,
        at,
        max_failures,
        max_failing_seconds,
    )
    return row if row is not None and row["disabled_now"] else None
