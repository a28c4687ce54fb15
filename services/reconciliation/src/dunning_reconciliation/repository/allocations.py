"""SQL of allocations (a payment's money applied to an invoice) and of reversals (money taken back,
with the parts it was taken from)."""

from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson

from dunning_reconciliation.repository.base import Conn

ALLOCATION_COLUMNS = (
    "allocation_id, tenant_id, payment_id, invoice_id, currency, amount, rule, reason, allocated_by,"
    " created_at, unallocated_at, unallocation_reason"
)

_INSERT_ALLOCATION = (
    f"INSERT INTO allocations ({ALLOCATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL)"
)


async def insert_allocation(
    conn: asyncpg.Connection,
    *,
    allocation_id: str,
    tenant_id: str,
    payment_id: str,
    invoice_id: str,
    currency: str,
    amount: Decimal,
    rule: str,
    reason: str,
    allocated_by: str,
    created_at: datetime,
) -> None:
    await conn.execute(
        _INSERT_ALLOCATION,
        allocation_id,
        tenant_id,
        payment_id,
        invoice_id,
        currency,
        amount,
        rule,
        reason,
        allocated_by,
        created_at,
    )


_INSERT_ALLOCATIONS = (
    f"INSERT INTO allocations ({ALLOCATION_COLUMNS}) SELECT r.allocation_id, r.tenant_id, r.payment_id,"
    " r.invoice_id, r.currency, r.amount, r.rule, r.reason, 'system', r.created_at, NULL, NULL"
    " FROM json_to_recordset($1::text::json) AS r(allocation_id text, tenant_id text, payment_id text,"
    " invoice_id text, currency text, amount numeric, rule text, reason text, created_at timestamptz)"
)


async def insert_allocations(conn: asyncpg.Connection, rows: list[dict]) -> None:
    """System allocations of a run (allocations_batch), in one statement (dicts; JSON values)."""
    await conn.execute(_INSERT_ALLOCATIONS, orjson.dumps(rows).decode())


# Active: not undone and not wholly taken back by a reversal. Newest first (a reversal's order).
_ACTIVE_ALLOCATIONS = (
    f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE payment_id = $1 AND unallocated_at IS NULL"
    " AND amount > 0 ORDER BY created_at DESC, allocation_id DESC FOR UPDATE"
)


async def lock_active_allocations(conn: asyncpg.Connection, payment_id: str) -> list[asyncpg.Record]:
    """The payment's active allocations, newest first, locked (the caller holds the payment's row)."""
    return await conn.fetch(_ACTIVE_ALLOCATIONS, payment_id)


_GET_ALLOCATION = (
    f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE tenant_id = $1 AND payment_id = $2 AND allocation_id = $3"
    " FOR UPDATE"
)


async def lock_allocation(
    conn: asyncpg.Connection, tenant_id: str, payment_id: str, allocation_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_ALLOCATION, tenant_id, payment_id, allocation_id)


_UNALLOCATE = "UPDATE allocations SET unallocated_at = $2, unallocation_reason = $3 WHERE allocation_id = $1"


async def mark_unallocated(conn: asyncpg.Connection, allocation_id: str, *, at: datetime, reason: str) -> None:
    await conn.execute(_UNALLOCATE, allocation_id, at, reason)


_REDUCE_ALLOCATION = "UPDATE allocations SET amount = amount - $2 WHERE allocation_id = $1"


async def reduce_allocation(conn: asyncpg.Connection, allocation_id: str, taken: Decimal) -> None:
    """A reversal took `taken` of the allocation back (its reversal_parts row keeps the history)."""
    await conn.execute(_REDUCE_ALLOCATION, allocation_id, taken)


_ALLOCATIONS_OF = (
    f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE payment_id = ANY ($1::text[])"
    " ORDER BY payment_id, created_at, allocation_id"
)


async def allocations_of(conn: Conn, payment_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    """Every allocation (active or not) of the payments, oldest first, by payment id."""
    out: dict[str, list[asyncpg.Record]] = {pid: [] for pid in payment_ids}
    for row in await conn.fetch(_ALLOCATIONS_OF, payment_ids):
        out[row["payment_id"]].append(row)
    return out


# --- reversals -------------------------------------------------------------------------------------

REVERSAL_COLUMNS = "reversal_id, tenant_id, payment_id, kind, source, source_reference, amount, created_at"

_REVERSAL_BY_REFERENCE = (
    f"SELECT {REVERSAL_COLUMNS} FROM reversals WHERE tenant_id = $1 AND source = $2 AND source_reference = $3"
)


async def reversal_by_reference(
    conn: asyncpg.Connection, tenant_id: str, source: str, source_reference: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(_REVERSAL_BY_REFERENCE, tenant_id, source, source_reference)


_INSERT_REVERSAL = f"INSERT INTO reversals ({REVERSAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
_INSERT_REVERSAL_PARTS = (
    "INSERT INTO reversal_parts (reversal_id, invoice_id, allocation_id, application_id, amount)"
    " SELECT $1, r.invoice_id, r.allocation_id, r.application_id, r.amount"
    " FROM jsonb_to_recordset($2::text::jsonb)"
    " AS r(invoice_id text, allocation_id text, application_id text, amount numeric)"
)


async def insert_reversal(
    conn: asyncpg.Connection,
    *,
    reversal_id: str,
    tenant_id: str,
    payment_id: str,
    kind: str,
    source: str,
    source_reference: str,
    amount: Decimal,
    created_at: datetime,
    parts: list[dict],
) -> None:
    """The reversal and its parts (dicts: invoice_id, allocation_id, application_id, amount as text)."""

    await conn.execute(
        _INSERT_REVERSAL, reversal_id, tenant_id, payment_id, kind, source, source_reference, amount, created_at
    )
    await conn.execute(_INSERT_REVERSAL_PARTS, reversal_id, orjson.dumps(parts).decode())


_REVERSALS_OF = (
    f"SELECT {REVERSAL_COLUMNS} FROM reversals WHERE payment_id = ANY ($1::text[]) ORDER BY created_at, reversal_id"
)


async def reversals_of(conn: Conn, payment_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    out: dict[str, list[asyncpg.Record]] = {pid: [] for pid in payment_ids}
    for row in await conn.fetch(_REVERSALS_OF, payment_ids):
        out[row["payment_id"]].append(row)
    return out
