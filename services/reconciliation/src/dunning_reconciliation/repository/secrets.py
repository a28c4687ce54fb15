"""SQL of webhook signing secrets, per tenant AND processor (stripe, gocardless, standard_webhooks).

Several secrets of one processor are active at once while one rotates: the new one, and the old ones
until their `expires_at` (the overlap). A revoked secret is refused at once. Times are the database's
`now()`, so every reader agrees on what is active."""

from datetime import datetime

import asyncpg

from dunning_reconciliation.repository.base import Conn

SECRET_COLUMNS = "secret_id, tenant_id, processor, secret, created_at, expires_at, revoked_at"

_ACTIVE_SECRETS = (
    "SELECT secret FROM webhook_secrets WHERE tenant_id = $1 AND processor = $2 AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at DESC, secret_id"
)


async def active_secrets(conn: Conn, tenant_id: str, processor: str) -> list[str]:
    """The secrets a request of this tenant and processor may be signed with, newest first."""
    rows = await conn.fetch(_ACTIVE_SECRETS, tenant_id, processor)
    return [r["secret"] for r in rows]


_INSERT_SECRET = (
    "INSERT INTO webhook_secrets (secret_id, tenant_id, processor, secret, expires_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, secret) DO NOTHING"
    f" RETURNING {SECRET_COLUMNS}, now() AS now"
)


async def insert_secret(
    conn: asyncpg.Connection,
    secret_id: str,
    tenant_id: str,
    processor: str,
    secret: str,
    *,
    expires_at: datetime | None = None,
) -> asyncpg.Record | None:
    """The new row, or None when the tenant already has this secret (for any processor)."""
    return await conn.fetchrow(_INSERT_SECRET, secret_id, tenant_id, processor, secret, expires_at)


_EXPIRE_PREVIOUS = (
    "UPDATE webhook_secrets SET expires_at = now() + make_interval(secs => $4)"
    " WHERE tenant_id = $1 AND processor = $2 AND secret_id <> $3 AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $4))"
    " RETURNING secret_id, expires_at"
)


async def expire_previous(
    conn: asyncpg.Connection, tenant_id: str, processor: str, keep_secret_id: str, overlap_seconds: int
) -> list[asyncpg.Record]:
    """The processor's other active secrets expire after the overlap (never later than they would have)."""
    return await conn.fetch(_EXPIRE_PREVIOUS, tenant_id, processor, keep_secret_id, float(overlap_seconds))


_LIST_SECRETS = (
    f"SELECT {SECRET_COLUMNS}, now() AS now FROM webhook_secrets"
    " WHERE tenant_id = $1 AND ($2::text IS NULL OR processor = $2)"
    " ORDER BY processor, created_at DESC, secret_id LIMIT $3"
)


async def list_secrets(conn: Conn, tenant_id: str, processor: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST_SECRETS, tenant_id, processor, limit)


_REVOKE_SECRET = (
    "UPDATE webhook_secrets SET revoked_at = coalesce(revoked_at, now())"
    f" WHERE tenant_id = $1 AND secret_id = $2 RETURNING {SECRET_COLUMNS}, now() AS now"
)


async def revoke_secret(conn: Conn, tenant_id: str, secret_id: str) -> asyncpg.Record | None:
    """Revoke now (a second revocation keeps the first time); None when the tenant has no such secret."""
    return await conn.fetchrow(_REVOKE_SECRET, tenant_id, secret_id)
