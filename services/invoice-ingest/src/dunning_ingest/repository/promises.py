"""Promises to pay: making one, the scheduler's verdict on it (kept or broken), and reading an
invoice's. One pending promise per invoice is held by a partial unique index (promises_one_pending)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

_INSERT = """
INSERT INTO promises (promise_id, invoice_id, tenant_id, currency, amount, promised_date, made_by, note,
                      acknowledged_at, event_id, due_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
_FIELDS = (
    "promise_id",
    "invoice_id",
    "tenant_id",
    "currency",
    "amount",
    "promised_date",
    "made_by",
    "note",
    "acknowledged_at",
    "event_id",
    "due_by",
)


async def insert_promise(conn: asyncpg.Connection, promise: dict[str, Any]) -> None:
    """promise: the columns of _FIELDS."""
    await conn.execute(_INSERT, *(promise[k] for k in _FIELDS))


_PENDING_OF = "SELECT * FROM promises WHERE invoice_id = $1 AND status = 'pending'"


async def pending_promise_of(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_PENDING_OF, invoice_id)


_SETTLE = """
UPDATE promises SET status = $3, paid_amount = $4, deadline = coalesce($5, deadline), settled_at = $6
 WHERE promise_id = $1 AND tenant_id = $2 AND status = 'pending'
RETURNING promise_id
"""
_EXISTS = "SELECT status FROM promises WHERE promise_id = $1 AND tenant_id = $2"


async def settle_promise(
    conn: asyncpg.Connection,
    tenant_id: str,
    promise_id: str,
    *,
    status: str,
    paid_amount: Decimal,
    deadline: datetime | None,
    at: datetime,
) -> str | None:
    """Record the scheduler's verdict (kept | broken) on a pending promise. Returns "settled", the
    status it already had (a verdict seen before: unchanged), or None if the tenant has no such promise."""
    if await conn.fetchval(_SETTLE, promise_id, tenant_id, status, paid_amount, deadline, at) is not None:
        return "settled"
    return await conn.fetchval(_EXISTS, promise_id, tenant_id)


_OF_INVOICE = "SELECT * FROM promises WHERE invoice_id = $1 ORDER BY promise_id"


async def promises_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    """The invoice's promises, oldest first."""
    return await conn.fetch(_OF_INVOICE, invoice_id)
