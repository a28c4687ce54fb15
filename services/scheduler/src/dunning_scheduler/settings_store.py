"""The tenant's settings, segment rules and customers' send windows as planning reads them, and the
stored versions as the API writes them (SQL in `repository.settings`, `repository.history`).

`TenantConfig` is a per-process memory (bootstrap builds one, the planner, re-planner and firing
use it) with a short time to live (`ttl_seconds`, 2 s): a change applies within seconds on every
replica without a round trip per invoice. The planning statement does not re-check the rules or
settings version it planned with (as it does the policy's): an invoice planned within the TTL of a
change uses the previous rules or settings, which is the documented window.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dunning_scheduler import repository
from dunning_scheduler.repository import history as history_sql
from dunning_scheduler.repository import settings as settings_sql
from dunning_scheduler.segments import NO_RULES, History, SegmentRules, parse_rules
from dunning_scheduler.tenant_settings import DEFAULT_SETTINGS, TenantSettings, parse_settings, parse_window
from dunning_scheduler.windows import SendWindow

TTL_SECONDS = 2.0


@dataclass(frozen=True)
class StoredDocument:
    """A stored version of the tenant's rules or settings (version 0: none stored, the default)."""

    version: int
    document: dict
    changed_by: str | None
    created_at: datetime | None

    def as_json(self) -> dict:
        return {
            "version": self.version,
            "changed_by": self.changed_by,
            "created_at": self.created_at,
        }


class _Entry:
    __slots__ = ("expires", "value")

    def __init__(self, value: Any, expires: float):
        self.value, self.expires = value, expires


class TenantConfig:
    """Per-process memory of each tenant's settings, rules and whether it has customer windows."""

    def __init__(
        self,
        *,
        ttl_seconds: float = TTL_SECONDS,
        max_tenants: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl = ttl_seconds
        self.max_tenants = max_tenants
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.loads = 0

    async def _cached(self, kind: str, tenant_id: str, load) -> Any:
        key = (kind, tenant_id)
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            self.loads += 1
            entry = self._entries[key] = _Entry(await load(), now + self.ttl)
            while len(self._entries) > self.max_tenants * 3:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return entry.value

    def forget(self, tenant_id: str) -> None:
        """Drop what is known of the tenant (this process changed it)."""
        for kind in ("settings", "rules", "windows"):
            self._entries.pop((kind, tenant_id), None)

    async def settings_of(self, conn: asyncpg.Connection, tenant_id: str) -> TenantSettings:
        async def load() -> TenantSettings:
            row = await settings_sql.latest(conn, settings_sql.SETTINGS, tenant_id)
            return DEFAULT_SETTINGS if row is None else parse_settings(row["document"], version=row["version"])

        return await self._cached("settings", tenant_id, load)

    async def rules_of(self, conn: asyncpg.Connection, tenant_id: str) -> SegmentRules:
        async def load() -> SegmentRules:
            row = await settings_sql.latest(conn, settings_sql.RULES, tenant_id)
            return NO_RULES if row is None else parse_rules(row["document"], version=row["version"])

        return await self._cached("rules", tenant_id, load)

    async def windows_of(
        self, conn: asyncpg.Connection, tenant_id: str, customer_ids: Iterable[str]
    ) -> dict[str, SendWindow]:
        """The customers' own send windows (those that have one). No round trip for a tenant whose
        customers have none (known within the TTL)."""

        async def count() -> int:
            return await settings_sql.customer_window_count(conn, tenant_id)

        if not await self._cached("windows", tenant_id, count):
            return {}
        ids = sorted({c for c in customer_ids if c})
        if not ids:
            return {}
        rows = await settings_sql.customer_windows(conn, tenant_id, ids)
        return {r["customer_id"]: parse_window(r["send_window"]) for r in rows}


async def history_of(
    conn: asyncpg.Connection, tenant_id: str, customer_ids: Iterable[str], n: int
) -> dict[str, History]:
    """Each customer's payment history over its last `n` settled invoices (one statement)."""
    ids = sorted({c for c in customer_ids if c})
    if n <= 0 or not ids:
        return {}
    rows = await history_sql.payment_history(conn, tenant_id, ids, n)
    return {
        r["customer_id"]: History(
            settled_invoices=r["settled_invoices"],
            average_days_late=None if r["average_days_late"] is None else Decimal(r["average_days_late"]),
            days_late=tuple(r["days_late"]),  # each rule averages over its own history_invoices
        )
        for r in rows
    }


# -- the stored versions (API) -------------------------------------------------------------------


def _document(row: asyncpg.Record | None, default: dict) -> StoredDocument:
    if row is None:
        return StoredDocument(0, default, None, None)
    return StoredDocument(row["version"], row["document"], row["changed_by"], row["created_at"])


async def stored_settings(conn: asyncpg.Connection, tenant_id: str) -> StoredDocument:
    return _document(await settings_sql.latest(conn, settings_sql.SETTINGS, tenant_id), DEFAULT_SETTINGS.document)


async def stored_rules(conn: asyncpg.Connection, tenant_id: str) -> StoredDocument:
    return _document(await settings_sql.latest(conn, settings_sql.RULES, tenant_id), NO_RULES.document)


async def put_document(
    conn: asyncpg.Connection, table: str, tenant_id: str, document: dict, changed_by: str, *, check=None
) -> tuple[StoredDocument, bool]:
    """Store `document` (normalised) as the tenant's next version of `table` unless equal to the
    latest; `check(conn)` runs first under the tenant's policy lock (rules: the policies they name
    exist). Returns the version in force and whether one was created."""
    async with conn.transaction():
        await repository.lock_tenant_policy(conn, tenant_id)
        if check is not None:
            await check(conn)
        current = await settings_sql.latest(conn, table, tenant_id)
        if current is not None and current["document"] == document:
            return _document(current, document), False
        version = (current["version"] if current else 0) + 1
        row = await settings_sql.insert(conn, table, tenant_id, version, document, changed_by)
        return _document(row, document), True
