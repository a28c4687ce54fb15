"""Tenants and their API keys: the plumbing tables every service has, in the schema of the
connection's service (each service authenticates on its own). The SQL for them is here, once."""

import hashlib
import secrets

import asyncpg

_UPSERT_TENANT = "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"
_ADD_API_KEY = "INSERT INTO api_keys (key_hash, tenant_id, prefix) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
_TENANT_NAME = "SELECT name FROM tenants WHERE id = $1"
_TENANT_OF_KEY = "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"


def new_api_key() -> str:
    return "dk_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    # The key is 256 random bits, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).digest()


async def provision(conn: asyncpg.Connection, tenant_id: str, name: str, api_key: str | None = None) -> None:
    """Create the tenant (idempotent) and register an API key for it, if one is given."""
    await conn.execute(_UPSERT_TENANT, tenant_id, name)
    if api_key:
        await conn.execute(_ADD_API_KEY, hash_api_key(api_key), tenant_id, api_key[:7])


async def tenant_name(conn: asyncpg.Connection, tenant_id: str) -> str | None:
    """The tenant's name; None: no such tenant in this service's schema."""
    return await conn.fetchval(_TENANT_NAME, tenant_id)


async def tenant_of_key(conn: asyncpg.Connection | asyncpg.Pool, api_key: str) -> str | None:
    """The tenant an API key belongs to; None: unknown or revoked."""
    return await conn.fetchval(_TENANT_OF_KEY, hash_api_key(api_key))
