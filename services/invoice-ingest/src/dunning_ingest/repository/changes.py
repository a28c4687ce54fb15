"""Changes to invoices after their creation: the rows read under lock, the update (one invoice or a
nightly sync's hundreds, one statement), void and write-off, the change history, credit notes."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dunning_ingest.repository.invoices import INVOICE_SELECT
from dunning_ingest.repository.payments import balance_and_status

_LOCK_ONE = INVOICE_SELECT + " WHERE i.tenant_id = $1 AND i.id = $2 FOR UPDATE OF i"
# Locked in id order, so concurrent syncs and PATCHes never deadlock.
_LOCK_MANY = INVOICE_SELECT + " WHERE i.tenant_id = $1 AND i.id = ANY($2::text[]) ORDER BY i.id FOR UPDATE OF i"


async def lock_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    """The invoice (repository.INVOICE_SELECT), locked until the end of the transaction."""
    return await conn.fetchrow(_LOCK_ONE, tenant_id, invoice_id)


async def lock_invoices(
    conn: asyncpg.Connection, tenant_id: str, invoice_ids: Sequence[str]
) -> dict[str, asyncpg.Record]:
    """id -> the invoice (repository.INVOICE_SELECT), locked until the end of the transaction."""
    rows = await conn.fetch(_LOCK_MANY, tenant_id, sorted(invoice_ids))
    return {r["id"]: r for r in rows}


_CUSTOMER = (
    "SELECT id, external_id, name, email, locale, timezone, country, subdivision, tags, attributes, phone,"
    " postal_address FROM customers"
    " WHERE tenant_id = $1 AND external_id = $2"
)


async def customer_by_external_id(conn: asyncpg.Connection, tenant_id: str, external_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_CUSTOMER, tenant_id, external_id)


# Every row: a new version of a locked open invoice; the balance follows the amount (payments.balance_and_status).
_UPDATE_INVOICES = f"""
UPDATE invoices AS i
   SET number = u.number, customer_id = u.customer_id, amount_due = u.amount_due, due_date = u.due_date,
       payment_url = u.payment_url, metadata = u.metadata, content_hash = decode(u.content_hash, 'hex'),
       version = u.version, updated_at = $2, {balance_and_status("u.amount_due")}
  FROM json_to_recordset($3::text::json)
       AS u(id text, version int, number text, customer_id text, amount_due numeric, due_date date,
            payment_url text, metadata jsonb, content_hash text)
 WHERE i.tenant_id = $1 AND i.id = u.id AND i.version = u.version - 1
RETURNING i.id
"""


async def update_invoices(
    conn: asyncpg.Connection, tenant_id: str, updated_at: datetime, rows: Sequence[dict[str, Any]]
) -> int:
    """rows: {id, version (the new one), number, customer_id, amount_due, due_date, payment_url, metadata,
    content_hash (hex)}; each applies only over the version before it. Returns how many did."""
    if not rows:
        return 0
    return len(await conn.fetch(_UPDATE_INVOICES, tenant_id, updated_at, orjson.dumps(rows).decode()))


_CLOSE = """
UPDATE invoices AS i
   SET status = $3::text, version = i.version + 1, updated_at = $4::timestamptz, closed_reason = $5,
       voided_at = CASE WHEN $3::text = 'void' THEN $4::timestamptz END,
       written_off_at = CASE WHEN $3::text = 'written_off' THEN $4::timestamptz END,
       written_off_amount = CASE WHEN $3::text = 'written_off' THEN i.balance END
 WHERE i.tenant_id = $1 AND i.id = $2 AND i.status = 'open'
RETURNING i.version, i.written_off_amount
"""


async def close_invoice(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, status: str, at: datetime, reason: str
) -> asyncpg.Record | None:
    """Void (`status` void) or write off (written_off, recording the balance) an open invoice: its new
    (version, written_off_amount), or None if it was not open."""
    return await conn.fetchrow(_CLOSE, tenant_id, invoice_id, status, at, reason)


_INSERT_CHANGES = """
INSERT INTO invoice_changes (invoice_id, version, tenant_id, kind, at, changes, reason, amount, event_id)
SELECT c.invoice_id, c.version, $1, c.kind, c.at, c.changes, c.reason, c.amount, c.event_id
  FROM json_to_recordset($2::text::json)
       AS c(invoice_id text, version int, kind text, at timestamptz, changes jsonb, reason text, amount numeric,
            event_id uuid)
"""


async def insert_changes(conn: asyncpg.Connection, tenant_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """rows: {invoice_id, version, kind (updated | voided | written_off), at, changes, reason, amount, event_id}."""
    if rows:
        await conn.execute(_INSERT_CHANGES, tenant_id, orjson.dumps(rows, default=str).decode())


_CHANGES_OF = "SELECT * FROM invoice_changes WHERE invoice_id = $1 ORDER BY version"
_CREDIT_NOTES_OF = "SELECT * FROM credit_notes WHERE invoice_id = $1 ORDER BY acknowledged_at, credit_note_id"


async def changes_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_CHANGES_OF, invoice_id)


async def credit_notes_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_CREDIT_NOTES_OF, invoice_id)
