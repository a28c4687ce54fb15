"""Policy versions: every change is a new version; the latest version is the active one (the SQL is
in `repository`).

Planning keeps each tenant's active policy in memory (`ActivePolicies`, one per process, built by
bootstrap and handed to the planner), parsed once per version. It does not trust that memory
blindly: the planning statement only writes if the tenant's latest stored version is still the one
planned with (one index probe inside the same statement), and otherwise the policy is read again
and the invoice planned again. A new version is thus used from the very next planning on, without
a round trip per invoice.
"""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dunning_scheduler import repository
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


def _stored(tenant_id: str, row: asyncpg.Record | None) -> StoredPolicy:
    """A policies row as the API shows it (no row: the built-in default)."""
    if row is None:
        return StoredPolicy(tenant_id, DEFAULT_POLICY, None)
    return StoredPolicy(tenant_id, parse_policy(row["document"], version=row["version"]), row["created_at"])


async def active_policy(conn: asyncpg.Connection, tenant_id: str) -> StoredPolicy:
    return _stored(tenant_id, await repository.latest_policy(conn, tenant_id))


async def save_policy(conn: asyncpg.Connection, tenant_id: str, policy: Policy) -> tuple[StoredPolicy, bool]:
    """Store `policy` as the tenant's next version; a document equal to the active one is not stored
    again (PUT is idempotent). Returns the active policy and whether a version was created."""
    async with conn.transaction():
        await repository.lock_tenant_policy(conn, tenant_id)
        current = await repository.latest_policy(conn, tenant_id)
        if current is not None and current["document"] == policy.document:
            return _stored(tenant_id, current), False
        version = (current["version"] if current else 0) + 1
        created_at = await repository.insert_policy(conn, tenant_id, version, policy.document)
    return StoredPolicy(tenant_id, parse_policy(policy.document, version=version), created_at), True


@dataclass(frozen=True)
class ActiveVersion:
    """The version planning uses, as the planning statement checks it: `stored_version` and
    `stored_at` of the tenant's latest policies row (0 and None: no row, the built-in default)."""

    policy: Policy
    stored_version: int
    stored_at: datetime | None


class ActivePolicies:
    """Per-process memory of each tenant's active policy (bounded, least recently used goes)."""

    def __init__(self, max_tenants: int = 10_000):
        self.max_tenants = max_tenants
        self._by_tenant: OrderedDict[str, ActiveVersion] = OrderedDict()
        self.loads = 0  # reads from the database (first use of a tenant, or a new version)

    def get(self, tenant_id: str) -> ActiveVersion | None:
        found = self._by_tenant.get(tenant_id)
        if found is not None:
            self._by_tenant.move_to_end(tenant_id)
        return found

    async def load(self, conn: asyncpg.Connection, tenant_id: str) -> ActiveVersion:
        """Read the tenant's latest version; the document is parsed again only if it changed."""
        row = await repository.latest_policy(conn, tenant_id)
        self.loads += 1
        known = self._by_tenant.get(tenant_id)
        if row is None:
            active = ActiveVersion(DEFAULT_POLICY, 0, None)
        elif known is not None and (known.stored_version, known.stored_at) == (row["version"], row["created_at"]):
            active = known
        else:
            active = ActiveVersion(
                parse_policy(row["document"], version=row["version"]), row["version"], row["created_at"]
            )
        self._by_tenant[tenant_id] = active
        self._by_tenant.move_to_end(tenant_id)
        while len(self._by_tenant) > self.max_tenants:
            self._by_tenant.popitem(last=False)
        return active
