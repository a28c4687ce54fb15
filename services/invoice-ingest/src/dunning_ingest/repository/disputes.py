"""Disputes: opening one, resolving it, and reading an invoice's. One open dispute per invoice is
held by a partial unique index (disputes_one_open); the caller checks first under the invoice's
row lock, so the index only backs it."""

from typing import Any

import asyncpg

_INSERT = """
INSERT INTO disputes (dispute_id, invoice_id, tenant_id, reason, currency, disputed_amount, opened_by,
                      acknowledged_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_FIELDS = (
    "dispute_id",
    "invoice_id",
    "tenant_id",
    "reason",
    "currency",
    "disputed_amount",
    "opened_by",
    "acknowledged_at",
    "event_id",
)


async def insert_dispute(conn: asyncpg.Connection, dispute: dict[str, Any]) -> None:
    """dispute: the columns of _FIELDS."""
    await conn.execute(_INSERT, *(dispute[k] for k in _FIELDS))


_OPEN_OF = "SELECT * FROM disputes WHERE invoice_id = $1 AND status = 'open'"


async def open_dispute_of(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_OPEN_OF, invoice_id)


_GET = "SELECT * FROM disputes WHERE tenant_id = $1 AND invoice_id = $2 AND dispute_id = $3"


async def get_dispute(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, dispute_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET + (" FOR UPDATE" if lock else ""), tenant_id, invoice_id, dispute_id)


_RESOLVE = """
UPDATE disputes SET status = $2, resolved_at = $3, credit_amount = $4, note = $5, resolved_by = $6
 WHERE dispute_id = $1 AND status = 'open'
RETURNING *
"""


async def resolve_dispute(conn: asyncpg.Connection, dispute_id: str, resolution: dict[str, Any]) -> asyncpg.Record:
    """resolution: outcome (upheld | rejected), resolved_at, credit_amount, note, resolved_by."""
    fields = ("outcome", "resolved_at", "credit_amount", "note", "resolved_by")
    return await conn.fetchrow(_RESOLVE, dispute_id, *(resolution[k] for k in fields))


_OF_INVOICE = "SELECT * FROM disputes WHERE invoice_id = $1 ORDER BY dispute_id"


async def disputes_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    """The invoice's disputes, oldest first."""
    return await conn.fetch(_OF_INVOICE, invoice_id)
