"""SQL of reconciliation's copy of each invoice: stored from InvoiceIssued (one or a run), found
by its keys, locked and rebalanced when money is applied."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dunning.logging import get_logger
from dunning_reconciliation.domain import MatchKeys, invoice_status
from dunning_reconciliation.repository.base import Conn

log = get_logger(__name__)

_INSERT_INVOICE = (
    "INSERT INTO invoices (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,"
    " metadata, status, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)"
    " ON CONFLICT (invoice_id) DO NOTHING RETURNING true"
)


async def insert_invoice(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    external_id: str,
    number: str,
    currency: str,
    amount_due: Decimal,
    metadata: dict[str, Any],
    issued_at: datetime | None,
) -> bool:
    inserted = await conn.fetchval(
        _INSERT_INVOICE,
        invoice_id,
        tenant_id,
        external_id,
        number,
        currency,
        amount_due,
        metadata,
        invoice_status(amount_due),
        issued_at,
    )
    return bool(inserted)


# A run of InvoiceIssued (invoice_batch): the rows travel as one JSON array of objects.
_INSERT_INVOICES = (
    "INSERT INTO invoices (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,"
    " metadata, status, issued_at)"
    " SELECT r.invoice_id, r.tenant_id, r.external_id, r.number, r.currency, r.amount_due, r.amount_due,"
    " r.metadata, r.status, r.issued_at"
    " FROM jsonb_to_recordset($1::text::jsonb) AS r(n int, invoice_id text, tenant_id text, external_id text,"
    " number text, currency text, amount_due numeric, metadata jsonb, status text, issued_at timestamptz)"
    " ORDER BY r.n"
    " ON CONFLICT (invoice_id) DO NOTHING RETURNING invoice_id"
)
# The keys as `unmatched_for_invoice` compares them (unstripped), for many invoices at once.
_INVOICES_WITH_PENDING = (
    "SELECT DISTINCT k.invoice_id FROM jsonb_to_recordset($1::text::jsonb)"
    " AS k(tenant_id text, invoice_id text, external_id text, number text)"
    " JOIN payments p ON p.tenant_id = k.tenant_id AND p.status = 'unmatched'"
    " AND (p.match_invoice_id = k.invoice_id OR k.external_id = ANY (p.match_external_ids)"
    " OR k.number = ANY (p.match_numbers))"
)


async def insert_invoices(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the invoices (dicts with n, invoice_id, tenant_id, external_id, number, currency,
    amount_due, metadata, status, issued_at; JSON values) in `n` order; an invoice already known is
    skipped. Returns the ids inserted."""
    return {r["invoice_id"] for r in await conn.fetch(_INSERT_INVOICES, orjson.dumps(rows).decode())}


async def invoices_with_pending_payments(conn: asyncpg.Connection, keys: list[dict[str, str]]) -> set[str]:
    """Of the invoices named by `keys` (tenant_id, invoice_id, external_id, number), those an unmatched
    payment names by any key."""
    return {r["invoice_id"] for r in await conn.fetch(_INVOICES_WITH_PENDING, orjson.dumps(keys).decode())}


_FIND_INVOICE = "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"
# By a weaker key: at most two rows, to tell "exactly one" from "ambiguous".
_FIND_INVOICE_BY = {
    "external_id": "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND external_id = $2 LIMIT 2",
    "number": "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND number = $2 LIMIT 2",
}


async def find_invoice(conn: asyncpg.Connection, tenant_id: str, keys: MatchKeys) -> str | None:
    """The tenant's invoice named by the strongest key that names exactly one invoice."""
    if keys.invoice_id:
        found = await conn.fetchval(_FIND_INVOICE, tenant_id, keys.invoice_id)
        if found:
            return found
    for column, values in (("external_id", keys.external_ids), ("number", keys.numbers)):
        for value in values:
            rows = await conn.fetch(_FIND_INVOICE_BY[column], tenant_id, value)
            if len(rows) == 1:
                return rows[0]["invoice_id"]
            if len(rows) > 1:
                log.error(
                    "reconciliation.match.ambiguous",
                    key=column,
                    value=value,
                    invoice_ids=[r["invoice_id"] for r in rows],
                )
    return None


_LOCK_INVOICE = (
    "SELECT invoice_id, tenant_id, external_id, number, currency, amount_due, balance, status, version"
    " FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
)


async def lock_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    """The tenant's invoice, locked for the transaction (None if unknown)."""
    return await conn.fetchrow(_LOCK_INVOICE, tenant_id, invoice_id)


_INVOICE_EXTERNAL_ID = "SELECT external_id FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"


async def invoice_external_id(conn: Conn, tenant_id: str, invoice_id: str) -> str | None:
    return await conn.fetchval(_INVOICE_EXTERNAL_ID, tenant_id, invoice_id)


_SET_INVOICE_BALANCE = "UPDATE invoices SET balance = $2, status = $3, updated_at = now() WHERE invoice_id = $1"


async def set_invoice_balance(conn: asyncpg.Connection, invoice_id: str, balance: Decimal, status: str) -> None:
    await conn.execute(_SET_INVOICE_BALANCE, invoice_id, balance, status)


# --- the changes invoice-ingest makes (InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff) -----------

_UPDATE_INVOICE = (
    "UPDATE invoices SET version = $2, external_id = $3, number = $4, amount_due = $5, balance = $6,"
    " status = $7, metadata = $8, updated_at = now() WHERE invoice_id = $1"
)


async def update_invoice(
    conn: asyncpg.Connection,
    invoice_id: str,
    *,
    version: int,
    external_id: str,
    number: str,
    amount_due: Decimal,
    balance: Decimal,
    status: str,
    metadata: dict[str, Any],
) -> None:
    await conn.execute(_UPDATE_INVOICE, invoice_id, version, external_id, number, amount_due, balance, status, metadata)


_CLOSE_INVOICE = (
    "UPDATE invoices SET version = $2, status = $3, balance = 0, voided_at = $4, void_reason = $5,"
    " updated_at = now() WHERE invoice_id = $1"
)


async def close_invoice(
    conn: asyncpg.Connection,
    invoice_id: str,
    *,
    version: int,
    status: str,
    voided_at: datetime | None = None,
    void_reason: str | None = None,
) -> None:
    """Void or write off: nothing is owed any more (a write-off's amount is kept in write_offs)."""
    await conn.execute(_CLOSE_INVOICE, invoice_id, version, status, voided_at, void_reason)
