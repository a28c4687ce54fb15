"""SQL of policies: every change is a new version; the latest version is the active one.

A tenant's policies are keyed: `policy_key` '' is the tenant's default (PUT /v1/policy), any other key
is a named policy (PUT /v1/policies/{policy_id}). A deleted named policy keeps its versions (marked
`deleted_at`), so invoices planned with one are still re-planned with it.
"""

from datetime import datetime

import asyncpg

DEFAULT_KEY = ""  # the tenant's default policy
_COLUMNS = "policy_key, version, document, changed_by, created_at, deleted_at"

_LATEST_POLICY = (
    f"SELECT {_COLUMNS} FROM policies WHERE tenant_id = $1 AND policy_key = $2 ORDER BY version DESC LIMIT 1"
)
_LOCK_TENANT_POLICY = "SELECT pg_advisory_xact_lock(hashtext('scheduler.policy:' || $1))"
_INSERT_POLICY = (
    "INSERT INTO policies (tenant_id, policy_key, version, document, changed_by) VALUES ($1, $4, $2, $3, $5)"
    " RETURNING created_at"
)


async def latest_policy(
    conn: asyncpg.Connection, tenant_id: str, policy_key: str = DEFAULT_KEY
) -> asyncpg.Record | None:
    """The latest stored version of the tenant's policy `policy_key` (version, document, changed_by,
    created_at, deleted_at); None: none stored. A deleted named policy's latest row has deleted_at."""
    return await conn.fetchrow(_LATEST_POLICY, tenant_id, policy_key)


async def lock_tenant_policy(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Serialise the tenant's policy, rule and settings writers until the transaction ends."""
    await conn.execute(_LOCK_TENANT_POLICY, tenant_id)


async def insert_policy(
    conn: asyncpg.Connection,
    tenant_id: str,
    version: int,
    document: dict,
    *,
    policy_key: str = DEFAULT_KEY,
    changed_by: str = "api",
) -> datetime:
    return await conn.fetchval(_INSERT_POLICY, tenant_id, version, document, policy_key, changed_by)


_POLICY_VERSION = f"SELECT {_COLUMNS} FROM policies WHERE tenant_id = $1 AND version = $2 AND policy_key = $3"


async def policy_version(
    conn: asyncpg.Connection, tenant_id: str, version: int, policy_key: str = DEFAULT_KEY
) -> asyncpg.Record | None:
    """One stored version of the tenant's policy `policy_key` (None: no such version)."""
    return await conn.fetchrow(_POLICY_VERSION, tenant_id, version, policy_key)


_NAMED_POLICIES = f"""
SELECT DISTINCT ON (policy_key) {_COLUMNS} FROM policies
WHERE tenant_id = $1 AND policy_key <> ''
ORDER BY policy_key, version DESC
"""


async def named_policies(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    """The latest version of each named policy of the tenant that is not deleted, by id."""
    return [r for r in await conn.fetch(_NAMED_POLICIES, tenant_id) if r["deleted_at"] is None]


_VERSIONS = f"SELECT {_COLUMNS} FROM policies WHERE tenant_id = $1 AND policy_key = $2 ORDER BY version DESC"


async def policy_versions(conn: asyncpg.Connection, tenant_id: str, policy_key: str) -> list[asyncpg.Record]:
    """Every stored version of the policy, newest first."""
    return await conn.fetch(_VERSIONS, tenant_id, policy_key)


_DELETE = "UPDATE policies SET deleted_at = now() WHERE tenant_id = $1 AND policy_key = $2 AND deleted_at IS NULL"


async def delete_policy(conn: asyncpg.Connection, tenant_id: str, policy_key: str) -> bool:
    """Mark every version of the named policy deleted; False: nothing to delete."""
    return await conn.execute(_DELETE, tenant_id, policy_key) != "UPDATE 0"


_EXISTING_KEYS = """
SELECT DISTINCT ON (policy_key) policy_key, deleted_at FROM policies
WHERE tenant_id = $1 AND policy_key = ANY($2::text[])
ORDER BY policy_key, version DESC
"""


async def existing_policies(conn: asyncpg.Connection, tenant_id: str, keys: list[str]) -> set[str]:
    """Those of `keys` that name a stored, not deleted policy of the tenant."""
    return {r["policy_key"] for r in await conn.fetch(_EXISTING_KEYS, tenant_id, keys) if r["deleted_at"] is None}
