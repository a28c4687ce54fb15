"""Policy versions: every change is a new version; the latest version is the active one (the SQL is
in `repository`).

A tenant has a default policy (key '', `PUT /v1/policy`) and any number of named policies (key = the
policy's id, `PUT /v1/policies/{policy_id}`) that segment rules choose. Each change records who made
it (`changed_by`).

Planning keeps each tenant's active policies in memory (`ActivePolicies`, one per process, built by
bootstrap and handed to the planner), parsed once per version. It does not trust that memory
blindly: the planning statement only writes if the latest stored version of the policy planned
with is still the one planned with (one index probe inside the same statement), and otherwise the
policy is read again and the invoice planned again. A new version is thus used from the very next
planning on, without a round trip per invoice.
"""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dunning.ids import new_id
from dunning_scheduler import repository
from dunning_scheduler.policy import DEFAULT_POLICY, Policy, parse_policy
from dunning_scheduler.repository import policies as policies_sql
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.settings_store import TenantConfig

DEFAULT_KEY = policies_sql.DEFAULT_KEY
NEW_INVOICES, OPEN_INVOICES = "new_invoices", "open_invoices"


@dataclass(frozen=True)
class StoredPolicy:
    tenant_id: str
    policy: Policy
    created_at: datetime | None  # None for the built-in default
    policy_key: str = DEFAULT_KEY
    changed_by: str | None = None

    def as_json(self) -> dict:
        return {
            "tenant_id": self.tenant_id,
            "policy_id": self.policy.policy_id,
            "version": self.policy.version,
            "source": "default" if self.policy.is_default else "tenant",
            "named": self.policy_key != DEFAULT_KEY,
            "created_at": self.created_at,
            "changed_by": self.changed_by,
            "policy": self.policy.document,
            "created": None,
            "replan": None,
        }


def _stored(tenant_id: str, row: asyncpg.Record | None) -> StoredPolicy:
    """A policies row as the API shows it (no row: the built-in default)."""
    if row is None:
        return StoredPolicy(tenant_id, DEFAULT_POLICY, None)
    return StoredPolicy(
        tenant_id,
        parse_policy(row["document"], version=row["version"]),
        row["created_at"],
        row["policy_key"],
        row["changed_by"],
    )


async def active_policy(conn: asyncpg.Connection, tenant_id: str) -> StoredPolicy:
    """The tenant's default policy (the built-in one if none is stored)."""
    return _stored(tenant_id, await repository.latest_policy(conn, tenant_id))


async def save_policy(conn: asyncpg.Connection, tenant_id: str, policy: Policy) -> tuple[StoredPolicy, bool]:
    """Store `policy` as the tenant's next default version; a document equal to the active one is not
    stored again (PUT is idempotent). Returns the active policy and whether a version was created."""
    stored, created, _ = await put_policy(conn, tenant_id, policy)
    return stored, created


async def put_policy(
    conn: asyncpg.Connection,
    tenant_id: str,
    policy: Policy,
    *,
    apply_to: str = NEW_INVOICES,
    policy_key: str = DEFAULT_KEY,
    changed_by: str = "api",
) -> tuple[StoredPolicy, bool, asyncpg.Record | None]:
    """`save_policy` for the policy `policy_key` (the default, or a named one), and with `apply_to`
    open_invoices a job, started in the same transaction, that re-plans every open invoice planned
    with that policy with its active version batch by batch (replan_loop.ReplanLoop). Returns the
    active policy, whether a version was created and the job. A deleted named policy comes back as
    its next version."""
    job = None
    async with conn.transaction():
        await repository.lock_tenant_policy(conn, tenant_id)
        current = await policies_sql.latest_policy(conn, tenant_id, policy_key)
        if current is not None and current["deleted_at"] is None and current["document"] == policy.document:
            stored, created = _stored(tenant_id, current), False
        else:
            version = (current["version"] if current else 0) + 1
            created_at = await policies_sql.insert_policy(
                conn, tenant_id, version, policy.document, policy_key=policy_key, changed_by=changed_by
            )
            compiled = parse_policy(policy.document, version=version)
            stored, created = StoredPolicy(tenant_id, compiled, created_at, policy_key, changed_by), True
        if apply_to == OPEN_INVOICES:
            job = await repository.create_replan(
                conn, new_id("rpl"), tenant_id, stored.policy.version, policy_key=policy_key
            )
    return stored, created, job


async def named_policy(conn: asyncpg.Connection, tenant_id: str, policy_id: str) -> StoredPolicy | None:
    """The named policy's latest version (None: none, or deleted)."""
    row = await policies_sql.latest_policy(conn, tenant_id, policy_id)
    return None if row is None or row["deleted_at"] is not None else _stored(tenant_id, row)


async def named_policies(conn: asyncpg.Connection, tenant_id: str) -> list[StoredPolicy]:
    return [_stored(tenant_id, row) for row in await policies_sql.named_policies(conn, tenant_id)]


async def policy_versions(conn: asyncpg.Connection, tenant_id: str, policy_id: str) -> list[StoredPolicy]:
    """Every version of a named policy, newest first (deleted ones too: invoices may use them)."""
    return [_stored(tenant_id, row) for row in await policies_sql.policy_versions(conn, tenant_id, policy_id)]


class PolicyInUse(Exception):
    """A named policy the segment rules in force name cannot be deleted."""


async def delete_policy(conn: asyncpg.Connection, tenant_id: str, policy_id: str) -> bool:
    """Delete a named policy (its versions stay for the invoices planned with them). False: no such
    policy; PolicyInUse: the rules in force name it."""
    async with conn.transaction():
        await repository.lock_tenant_policy(conn, tenant_id)  # rules are written under the same lock
        if await settings_sql.rules_use(conn, tenant_id, policy_id):
            raise PolicyInUse(policy_id)
        return await policies_sql.delete_policy(conn, tenant_id, policy_id)


@dataclass(frozen=True)
class ActiveVersion:
    """The version planning uses, as the planning statement checks it: `stored_version` and
    `stored_at` of the latest policies row of `policy_key` (0 and None: no row, the built-in default)."""

    policy: Policy
    stored_version: int
    stored_at: datetime | None
    policy_key: str = DEFAULT_KEY


class ActivePolicies:
    """Per-process memory of each tenant's active policies (bounded, least recently used goes), and
    the process's `TenantConfig` (settings, segment rules, customer windows) planning reads with them."""

    def __init__(self, max_tenants: int = 10_000, config: TenantConfig | None = None):
        self.max_tenants = max_tenants
        # The tenants' settings, rules and customer windows (2-s TTL), shared by whoever plans with these policies.
        self.config = config or TenantConfig()
        self._active: OrderedDict[tuple[str, str], ActiveVersion] = OrderedDict()
        self._versions: OrderedDict[tuple[str, str, int], Policy] = OrderedDict()  # stored versions never change
        self.loads = 0  # reads from the database (first use of a policy, or a new version)

    async def version_of(
        self,
        conn: asyncpg.Connection,
        tenant_id: str,
        version: int,
        is_default: bool,
        *,
        policy_key: str | None = DEFAULT_KEY,
    ) -> Policy:
        """The policy an invoice was planned with (re-planning keeps it): the built-in default, or
        the stored `version` of the tenant's policy `policy_key` (parsed once; the default if gone)."""
        if is_default:
            return DEFAULT_POLICY
        policy_key = policy_key or DEFAULT_KEY
        key = (tenant_id, policy_key, version)
        found = self._versions.get(key)
        if found is None:
            row = await policies_sql.policy_version(conn, tenant_id, version, policy_key)
            if row is None:
                return DEFAULT_POLICY
            found = self._versions[key] = parse_policy(row["document"], version=version)
            while len(self._versions) > self.max_tenants:
                self._versions.popitem(last=False)
        return found

    def get(self, tenant_id: str, policy_key: str = DEFAULT_KEY) -> ActiveVersion | None:
        found = self._active.get((tenant_id, policy_key))
        if found is not None:
            self._active.move_to_end((tenant_id, policy_key))
        return found

    async def load(self, conn: asyncpg.Connection, tenant_id: str, policy_key: str = DEFAULT_KEY) -> ActiveVersion:
        """Read the latest version of the tenant's policy `policy_key`; the document is parsed again
        only if it changed. A named policy that does not exist (or was deleted) is the tenant's default."""
        row = await policies_sql.latest_policy(conn, tenant_id, policy_key)
        self.loads += 1
        if policy_key != DEFAULT_KEY and (row is None or row["deleted_at"] is not None):
            return await self.load(conn, tenant_id)
        known = self._active.get((tenant_id, policy_key))
        if row is None:
            active = ActiveVersion(DEFAULT_POLICY, 0, None)
        elif known is not None and (known.stored_version, known.stored_at) == (row["version"], row["created_at"]):
            active = known
        else:
            active = ActiveVersion(
                parse_policy(row["document"], version=row["version"]), row["version"], row["created_at"], policy_key
            )
        self._active[(tenant_id, policy_key)] = active
        self._active.move_to_end((tenant_id, policy_key))
        while len(self._active) > self.max_tenants:
            self._active.popitem(last=False)
        return active
