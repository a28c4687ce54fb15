"""SQL of policies: every change is a new version; the latest version is the active one."""

from datetime import datetime

import asyncpg

_LATEST_POLICY = "SELECT version, document, created_at FROM policies WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1"
_LOCK_TENANT_POLICY = "SELECT pg_advisory_xact_lock(hashtext('scheduler.policy:' || $1))"
_INSERT_POLICY = "INSERT INTO policies (tenant_id, version, document) VALUES ($1, $2, $3) RETURNING created_at"


async def latest_policy(conn: asyncpg.Connection, tenant_id: str) -> asyncpg.Record | None:
    """The tenant's latest stored version (version, document, created_at); None: none stored."""
    return await conn.fetchrow(_LATEST_POLICY, tenant_id)


async def lock_tenant_policy(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Serialise the tenant's policy writers until the transaction ends."""
    await conn.execute(_LOCK_TENANT_POLICY, tenant_id)


async def insert_policy(conn: asyncpg.Connection, tenant_id: str, version: int, document: dict) -> datetime:
    return await conn.fetchval(_INSERT_POLICY, tenant_id, version, document)


_POLICY_VERSION = "SELECT version, document, created_at FROM policies WHERE tenant_id = $1 AND version = $2"


async def policy_version(conn: asyncpg.Connection, tenant_id: str, version: int) -> asyncpg.Record | None:
    """One stored version of the tenant's policy (None: no such version)."""
    return await conn.fetchrow(_POLICY_VERSION, tenant_id, version)
