"""SQL of reconciliation's copy of each invoice: stored from InvoiceIssued (one or a run), found
by its keys, locked and rebalanced when money is applied."""

from datetime import date, datetime
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
    " metadata, status, issued_at, customer_id, due_date, customer_name)"
    " VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12)"
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
    customer_id: str | None = None,
    due_date: date | None = None,
    customer_name: str | None = None,
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
        customer_id,
        due_date,
        customer_name,
    )
    return bool(inserted)


# A run of InvoiceIssued (invoice_batch): the rows travel as one JSON array of objects.
_INSERT_INVOICES = (
    "INSERT INTO invoices (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,"
    " metadata, status, issued_at, customer_id, due_date, customer_name)"
    " SELECT r.invoice_id, r.tenant_id, r.external_id, r.number, r.currency, r.amount_due, r.amount_due,"
    " r.metadata, r.status, r.issued_at, r.customer_id, r.due_date, r.customer_name"
    " FROM jsonb_to_recordset($1::text::jsonb) AS r(n int, invoice_id text, tenant_id text, external_id text,"
    " number text, currency text, amount_due numeric, metadata jsonb, status text, issued_at timestamptz,"
    " customer_id text, due_date date, customer_name text)"
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
    amount_due, metadata, status, issued_at, customer_id, due_date, customer_name; JSON values) in `n` order; an
    invoice already known is skipped. Returns the ids inserted."""
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


_LOCKED_COLUMNS = (
    "invoice_id, tenant_id, external_id, number, currency, amount_due, balance, status, version,"
    " customer_id, due_date, issued_at, balance_version"
)
_LOCK_INVOICE = f"SELECT {_LOCKED_COLUMNS} FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
_LOCK_INVOICES = (
    f"SELECT {_LOCKED_COLUMNS} FROM invoices WHERE tenant_id = $1 AND invoice_id = ANY ($2::text[])"
    " ORDER BY invoice_id FOR UPDATE"
)
# A customer's open invoices (those that can take its credit), locked in id order; the caller applies
# them oldest first (due date, issue time, id).
_LOCK_OPEN_INVOICES_OF_CUSTOMER = (
    f"SELECT {_LOCKED_COLUMNS} FROM invoices WHERE tenant_id = $1 AND customer_id = $2 AND status = 'open'"
    " AND balance > 0 AND currency = ANY ($3::text[]) AND ($4::text IS NULL OR invoice_id = $4)"
    " ORDER BY invoice_id FOR UPDATE"
)


_CUSTOMERS_OF_INVOICES = (
    "SELECT DISTINCT customer_id FROM invoices WHERE tenant_id = $1 AND invoice_id = ANY ($2::text[])"
    " AND customer_id IS NOT NULL"
)


async def customers_of_invoices(conn: asyncpg.Connection, tenant_id: str, invoice_ids) -> list[str]:
    """The customers of the invoices (read without a lock: an invoice's customer does not change here)."""
    return [r["customer_id"] for r in await conn.fetch(_CUSTOMERS_OF_INVOICES, tenant_id, list(invoice_ids))]


async def lock_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    """The tenant's invoice, locked for the transaction (None if unknown)."""
    return await conn.fetchrow(_LOCK_INVOICE, tenant_id, invoice_id)


async def lock_invoices(conn: asyncpg.Connection, tenant_id: str, invoice_ids) -> dict[str, asyncpg.Record]:
    """The tenant's invoices among `invoice_ids`, locked in id order (two lockers cannot deadlock)."""
    rows = await conn.fetch(_LOCK_INVOICES, tenant_id, sorted(set(invoice_ids)))
    return {r["invoice_id"]: r for r in rows}


async def lock_open_invoices_of_customer(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, currencies, invoice_id: str | None = None
) -> list[asyncpg.Record]:
    """The customer's open invoices in `currencies` (or only `invoice_id`), locked, oldest first."""
    currencies = sorted(set(currencies))
    rows = await conn.fetch(_LOCK_OPEN_INVOICES_OF_CUSTOMER, tenant_id, customer_id, currencies, invoice_id)
    return sorted(rows, key=lambda r: (r["due_date"] is None, r["due_date"], r["issued_at"], r["invoice_id"]))


_INVOICE_EXTERNAL_ID = "SELECT external_id FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"


async def invoice_external_id(conn: Conn, tenant_id: str, invoice_id: str) -> str | None:
    return await conn.fetchval(_INVOICE_EXTERNAL_ID, tenant_id, invoice_id)


_SET_INVOICE_BALANCE = (
    "UPDATE invoices SET balance = $2, status = $3, balance_version = balance_version + 1, updated_at = now()"
    " WHERE invoice_id = $1 RETURNING balance_version"
)


async def set_invoice_balance(conn: asyncpg.Connection, invoice_id: str, balance: Decimal, status: str) -> int:
    """A change of the (locked) invoice's balance: returns its new balance_version (the event states it)."""
    return await conn.fetchval(_SET_INVOICE_BALANCE, invoice_id, balance, status)


_SET_INVOICE_BALANCES = (
    "UPDATE invoices i SET balance = r.balance, status = r.status, balance_version = r.balance_version,"
    " updated_at = now() FROM json_to_recordset($1::text::json)"
    " AS r(invoice_id text, balance numeric, status text, balance_version int) WHERE i.invoice_id = r.invoice_id"
)


async def set_invoice_balances(conn: asyncpg.Connection, rows: list[dict]) -> None:
    """The (locked) invoices' balances after a run of changes, each with its last balance_version."""
    await conn.execute(_SET_INVOICE_BALANCES, orjson.dumps(rows).decode())


# --- the changes invoice-ingest makes (InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff) -----------

_UPDATE_INVOICE = (
    "UPDATE invoices SET version = $2, external_id = $3, number = $4, amount_due = $5, balance = $6,"
    " status = $7, metadata = $8, customer_id = coalesce($9, customer_id), due_date = coalesce($10, due_date),"
    " updated_at = now() WHERE invoice_id = $1"
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
    customer_id: str | None = None,
    due_date: date | None = None,
) -> None:
    await conn.execute(
        _UPDATE_INVOICE,
        invoice_id,
        version,
        external_id,
        number,
        amount_due,
        balance,
        status,
        metadata,
        customer_id,
        due_date,
    )


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
