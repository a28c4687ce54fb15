"""SQL of credit notes (POST /v1/credit-notes) and of the write-offs kept for reporting."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dunning_reconciliation.repository.base import Conn

CREDIT_NOTE_COLUMNS = (
    "credit_note_id, tenant_id, invoice_id, invoice_external_id, reference, reason, currency, amount,"
    " amount_applied, unapplied_amount, balance_remaining, settled, fingerprint, acknowledged_at"
)

# --- credit notes ----------------------------------------------------------------------------------

_INSERT_CREDIT_NOTE = (
    f"INSERT INTO credit_notes ({CREDIT_NOTE_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    f" RETURNING {CREDIT_NOTE_COLUMNS}"
)


async def insert_credit_note(
    conn: asyncpg.Connection,
    *,
    credit_note_id: str,
    tenant_id: str,
    invoice_id: str,
    invoice_external_id: str,
    reference: str,
    reason: str,
    currency: str,
    amount: Decimal,
    amount_applied: Decimal,
    unapplied_amount: Decimal,
    balance_remaining: Decimal,
    settled: bool,
    fingerprint: str,
    acknowledged_at: datetime,
) -> asyncpg.Record:
    return await conn.fetchrow(
        _INSERT_CREDIT_NOTE,
        credit_note_id,
        tenant_id,
        invoice_id,
        invoice_external_id,
        reference,
        reason,
        currency,
        amount,
        amount_applied,
        unapplied_amount,
        balance_remaining,
        settled,
        fingerprint,
        acknowledged_at,
    )


_CREDIT_NOTE_BY_REFERENCE = (
    "SELECT credit_note_id, fingerprint, response FROM credit_notes WHERE tenant_id = $1 AND reference = $2"
)


async def credit_note_by_reference(conn: asyncpg.Connection, tenant_id: str, reference: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_CREDIT_NOTE_BY_REFERENCE, tenant_id, reference)


_STORE_CREDIT_NOTE_RESPONSE = "UPDATE credit_notes SET response = $2 WHERE credit_note_id = $1"


async def store_credit_note_response(conn: asyncpg.Connection, credit_note_id: str, response: dict[str, Any]) -> None:
    await conn.execute(_STORE_CREDIT_NOTE_RESPONSE, credit_note_id, response)


_GET_CREDIT_NOTE = f"SELECT {CREDIT_NOTE_COLUMNS} FROM credit_notes WHERE tenant_id = $1 AND credit_note_id = $2"


async def get_credit_note(conn: Conn, tenant_id: str, credit_note_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_CREDIT_NOTE, tenant_id, credit_note_id)


_LIST_CREDIT_NOTES = (
    f"SELECT {CREDIT_NOTE_COLUMNS} FROM credit_notes WHERE tenant_id = $1"
    " AND ($2::text IS NULL OR invoice_id = $2) AND ($3::text IS NULL OR credit_note_id > $3)"
    " ORDER BY credit_note_id LIMIT $4"
)


async def list_credit_notes(
    conn: Conn, tenant_id: str, *, invoice_id: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST_CREDIT_NOTES, tenant_id, invoice_id, after, limit)


# --- write-offs ------------------------------------------------------------------------------------

_INSERT_WRITE_OFF = (
    "INSERT INTO write_offs (invoice_id, tenant_id, external_id, number, currency, amount, amount_reported,"
    " reason, written_off_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (invoice_id) DO NOTHING"
)


async def insert_write_off(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    external_id: str,
    number: str,
    currency: str,
    amount: Decimal,
    amount_reported: Decimal,
    reason: str,
    written_off_at: datetime,
) -> None:
    await conn.execute(
        _INSERT_WRITE_OFF,
        invoice_id,
        tenant_id,
        external_id,
        number,
        currency,
        amount,
        amount_reported,
        reason,
        written_off_at,
    )


# The period [$2, $3) (either end open when null), for the page and for the totals alike.
_IN_PERIOD = (
    "tenant_id = $1 AND ($2::timestamptz IS NULL OR written_off_at >= $2)"
    " AND ($3::timestamptz IS NULL OR written_off_at < $3)"
)
_LIST_WRITE_OFFS = (
    "SELECT invoice_id, external_id, number, currency, amount, amount_reported, reason, written_off_at"
    f" FROM write_offs WHERE {_IN_PERIOD}"
    " AND ($4::timestamptz IS NULL OR (written_off_at, invoice_id) > ($4, $5::text))"
    " ORDER BY written_off_at, invoice_id LIMIT $6"
)
_WRITE_OFF_TOTALS = (
    "SELECT currency, count(*)::int AS count, sum(amount) AS amount"
    f" FROM write_offs WHERE {_IN_PERIOD} GROUP BY currency ORDER BY currency"
)


async def list_write_offs(
    conn: Conn,
    tenant_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The period's write-offs in time order, after the (written_off_at, invoice_id) of a cursor."""
    after_at, after_id = after if after else (None, None)
    return await conn.fetch(_LIST_WRITE_OFFS, tenant_id, start, end, after_at, after_id, limit)


async def write_off_totals(
    conn: Conn, tenant_id: str, *, start: datetime | None, end: datetime | None
) -> list[asyncpg.Record]:
    """(currency, count, amount) of the period's write-offs."""
    return await conn.fetch(_WRITE_OFF_TOTALS, tenant_id, start, end)
