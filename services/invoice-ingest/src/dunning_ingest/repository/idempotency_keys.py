"""Idempotency-Keys (see idempotency.py for the semantics)."""

from typing import Any, TypeAlias

import asyncpg

# Claim a key: a new one, one expired (older than $4 hours), or an unfinished claim of the same
# request left for $5 seconds (its process died). True: claimed.
_CLAIM_KEY = """
INSERT INTO idempotency_keys AS k (tenant_id, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, status = NULL, headers = NULL, body = NULL,
       created_at = now(), locked_at = now()
 WHERE k.created_at < now() - make_interval(hours => $4)
    OR (k.status IS NULL AND k.fingerprint = EXCLUDED.fingerprint
        AND k.locked_at < now() - make_interval(secs => $5))
RETURNING true
"""
_GET_KEY = "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2"
_COMPLETE_KEY = "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE tenant_id = $1 AND key = $2"
_RELEASE_KEY = "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL"
_PURGE_KEYS = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)"
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def claim_idempotency_key(
    conn: Conn, tenant_id: str, key: str, fingerprint: bytes, *, ttl_hours: int, stale_seconds: float
) -> bool:
    return bool(await conn.fetchval(_CLAIM_KEY, tenant_id, key, fingerprint, ttl_hours, float(stale_seconds)))


async def idempotency_key(conn: Conn, tenant_id: str, key: str) -> asyncpg.Record | None:
    """(fingerprint, status, headers, body); status None: the first request is still in flight."""
    return await conn.fetchrow(_GET_KEY, tenant_id, key)


async def complete_idempotency_key(
    conn: Conn, tenant_id: str, key: str, status: int, headers: dict[str, Any], body: bytes
) -> None:
    await conn.execute(_COMPLETE_KEY, tenant_id, key, status, headers, body)


async def release_idempotency_key(conn: Conn, tenant_id: str, key: str) -> None:
    await conn.execute(_RELEASE_KEY, tenant_id, key)


async def purge_idempotency_keys(conn: Conn, ttl_hours: int) -> int:
    return int((await conn.execute(_PURGE_KEYS, ttl_hours)).split()[-1])
