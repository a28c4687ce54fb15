"""Policies in PostgreSQL: every change is a new version; the latest version is the active one."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dunning_scheduler.policy import DEFAULT_POLICY, Policy, parse_policy


@dataclass(frozen=True)
class StoredPolicy:
    tenant_id: str
    policy: Policy
    created_at: datetime | None  # None for the built-in default

    def as_json(self) -> dict:
        return {
            "tenant_id": self.tenant_id,
            "policy_id": self.policy.policy_id,
            "version": self.policy.version,
            "source": "default" if self.policy.is_default else "tenant",
            "created_at": self.created_at,
            "policy": self.policy.document,
        }


async def active_policy(conn: asyncpg.Connection, tenant_id: str) -> StoredPolicy:
    row = await conn.fetchrow(
        "SELECT version, document, created_at FROM policies WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        tenant_id,
    )
    if row is None:
        return StoredPolicy(tenant_id, DEFAULT_POLICY, None)
    policy = parse_policy(row["document"], version=row["version"])
    return StoredPolicy(tenant_id, policy, row["created_at"])


async def save_policy(conn: asyncpg.Connection, tenant_id: str, policy: Policy) -> tuple[StoredPolicy, bool]:
    """Store `policy` as the tenant's next version; a document equal to the active one is not stored
    again (PUT is idempotent). Returns the active policy and whether a version was created."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('scheduler.policy:' || $1))", tenant_id)
        current = await conn.fetchrow(
            "SELECT version, document, created_at FROM policies WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
            tenant_id,
        )
        if current is not None and current["document"] == policy.document:
            return StoredPolicy(tenant_id, parse_policy(current["document"], version=current["version"]),
                                current["created_at"]), False
        version = (current["version"] if current else 0) + 1
        created_at = await conn.fetchval(
            "INSERT INTO policies (tenant_id, version, document) VALUES ($1, $2, $3) RETURNING created_at",
            tenant_id, version, policy.document,
        )
    return StoredPolicy(tenant_id, parse_policy(policy.document, version=version), created_at), True
