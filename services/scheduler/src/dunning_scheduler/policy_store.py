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

from dunning.ids import new_id
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


NEW_INVOICES, OPEN_INVOICES = "new_invoices", "open_invoices"


async def save_policy(conn: asyncpg.Connection, tenant_id: str, policy: Policy) -> tuple[StoredPolicy, bool]:
    """Store `policy` as the tenant's next version; a document equal to the active one is not stored
    again (PUT is idempotent). Returns the active policy and whether a version was created."""
    stored, created, _ = await put_policy(conn, tenant_id, policy)
    return stored, created


async def put_policy(
    conn: asyncpg.Connection, tenant_id: str, policy: Policy, *, apply_to: str = NEW_INVOICES
) -> tuple[StoredPolicy, bool, asyncpg.Record | None]:
    """`save_policy`, and with `apply_to` open_invoices a job, started in the same transaction, that
    re-plans every open invoice of the tenant with the active version batch by batch
    (replan_loop.ReplanLoop). Returns the active policy, whether a version was created and the job."""
    job = None
    async with conn.transaction():
        await repository.lock_tenant_policy(conn, tenant_id)
        current = await repository.latest_policy(conn, tenant_id)
        if current is not None and current["document"] == policy.document:
            stored, created = _stored(tenant_id, current), False
        else:
            version = (current["version"] if current else 0) + 1
            created_at = await repository.insert_policy(conn, tenant_id, version, policy.document)
            stored, created = StoredPolicy(tenant_id, parse_policy(policy.document, version=version), created_at), True
        if apply_to == OPEN_INVOICES:
            job = await repository.create_replan(conn, new_id("rpl"), tenant_id, stored.policy.version)
    return stored, created, job


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
        self._versions: OrderedDict[tuple[str, int], Policy] = OrderedDict()  # stored versions never change
        self.loads = 0  # reads from the database (first use of a tenant, or a new version)

    async def version_of(self, conn: asyncpg.Connection, tenant_id: str, version: int, is_default: bool) -> Policy:
        """The policy an invoice was planned with (re-planning keeps it): the built-in default, or
        the tenant's stored `version` (parsed once; the default if that version is gone)."""
        if is_default:
            return DEFAULT_POLICY
        key = (tenant_id, version)
        found = self._versions.get(key)
        if found is None:
            row = await repository.policy_version(conn, tenant_id, version)
            if row is None:
                return DEFAULT_POLICY
            found = self._versions[key] = parse_policy(row["document"], version=version)
            while len(self._versions) > self.max_tenants:
                self._versions.popitem(last=False)
        return found

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
