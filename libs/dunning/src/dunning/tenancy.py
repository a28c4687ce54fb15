"""Tenants and their API keys, in the schema of the connection's service."""

import asyncpg

from dunning.http import hash_api_key


async def provision(conn: asyncpg.Connection, tenant_id: str, name: str, api_key: str | None = None) -> None:
    """Create the tenant (idempotent) and register an API key for it, if one is given."""
    await conn.execute(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        tenant_id, name,
    )
    if api_key:
        await conn.execute(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            hash_api_key(api_key), tenant_id, api_key[:7],
        )
