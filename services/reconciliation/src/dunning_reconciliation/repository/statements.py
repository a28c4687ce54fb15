"""SQL of bank statements: a statement claimed once per tenant and bank id, its file's digest, its
lines claimed once per tenant by key (an overlapping statement's lines are duplicates), and the
progress a chunked import records so that a retry resumes where it stopped."""

from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dunning_reconciliation.repository.base import Conn

STATEMENT_COLUMNS = (
    "statement_id, tenant_id, format, filename, file_sha256, file_position, account, bank_statement_id,"
    " currency, opening_balance, closing_balance, status, lines, credits, lines_done, matched, unmatched,"
    " skipped, duplicates, imported_at, completed_at"
)
LINE_COLUMNS = (
    "statement_id, position, tenant_id, line_key, kind, status, amount, currency, booking_date, value_date,"
    " payer_name, payer_account, remittance, creditor_reference, end_to_end_id, bank_reference, note,"
    " payment_id, invoice_ids"
)

_OF_FILE = (
    f"SELECT {STATEMENT_COLUMNS} FROM statements WHERE tenant_id = $1 AND file_sha256 = $2 ORDER BY file_position"
)


async def statements_of_file(conn: Conn, tenant_id: str, sha256: str) -> list[asyncpg.Record]:
    return await conn.fetch(_OF_FILE, tenant_id, sha256)


_CLAIM = (
    "INSERT INTO statements (statement_id, tenant_id, format, filename, file_sha256, file_position, account,"
    " bank_statement_id, currency, opening_balance, closing_balance, lines, credits, imported_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    " ON CONFLICT (tenant_id, account, bank_statement_id) DO NOTHING RETURNING statement_id"
)


async def claim_statement(conn: Conn, row: dict[str, Any]) -> bool:
    """Insert the statement; False if the tenant has one with the same account and bank id."""
    claimed = await conn.fetchval(
        _CLAIM,
        row["statement_id"],
        row["tenant_id"],
        row["format"],
        row["filename"],
        row["file_sha256"],
        row["file_position"],
        row["account"],
        row["bank_statement_id"],
        row["currency"],
        row["opening_balance"],
        row["closing_balance"],
        row["lines"],
        row["credits"],
        row["imported_at"],
    )
    return claimed is not None


_BY_BANK_ID = (
    f"SELECT {STATEMENT_COLUMNS} FROM statements WHERE tenant_id = $1 AND account = $2 AND bank_statement_id = $3"
)


async def statement_by_bank_id(conn: Conn, tenant_id: str, account: str, bank_statement_id: str) -> asyncpg.Record:
    return await conn.fetchrow(_BY_BANK_ID, tenant_id, account, bank_statement_id)


_LOCK = f"SELECT {STATEMENT_COLUMNS} FROM statements WHERE statement_id = $1 FOR UPDATE"


async def lock_statement(conn: asyncpg.Connection, statement_id: str) -> asyncpg.Record:
    """The statement's row, locked to the end of the transaction: one chunk at a time per statement."""
    return await conn.fetchrow(_LOCK, statement_id)


# The keys and the lines travel as one JSON text each (orjson): asyncpg's array encoding of a chunk's
# 17 columns (85,000 values) costs more than PostgreSQL's reading them (the statement bench). Read as
# `json`, not `jsonb`: each row is read once, and building the jsonb value first made the statement
# half again as long (the import's other set-wise writes read their rows the same way).
_CLAIM_KEYS = (
    "INSERT INTO statement_line_keys (tenant_id, line_key, statement_id)"
    " SELECT $1, k, $2 FROM json_array_elements_text($3::text::json) AS k ON CONFLICT DO NOTHING"
    " RETURNING line_key"
)


async def claim_line_keys(conn: asyncpg.Connection, tenant_id: str, statement_id: str, keys: list[str]) -> set[str]:
    """The keys first seen now (the others were claimed by an earlier statement)."""
    rows = await conn.fetch(_CLAIM_KEYS, tenant_id, statement_id, orjson.dumps(keys).decode())
    return {r["line_key"] for r in rows}


_INSERT_LINES = (
    f"INSERT INTO statement_lines ({LINE_COLUMNS})"
    " SELECT $1, u.position, $2, u.line_key, u.kind, u.status, u.amount, u.currency, u.booking_date, u.value_date,"
    " u.payer_name, u.payer_account, u.remittance, u.creditor_reference, u.end_to_end_id, u.bank_reference,"
    " u.note, u.payment_id, coalesce(string_to_array(u.invoice_ids, ' '), '{}')"
    " FROM json_to_recordset($3::text::json) AS u(position int, line_key text, kind text, status text,"
    " amount numeric, currency text, booking_date date, value_date date, payer_name text, payer_account text,"
    " remittance text, creditor_reference text, end_to_end_id text, bank_reference text, note text,"
    " payment_id text, invoice_ids text)"
)


async def insert_lines(
    conn: asyncpg.Connection, statement_id: str, tenant_id: str, lines: list[dict[str, Any]]
) -> None:
    """One statement for a chunk of lines (dicts of the columns above; `invoice_ids`: space-separated,
    or None; amounts Decimal, dates date)."""
    await conn.execute(_INSERT_LINES, statement_id, tenant_id, orjson.dumps(lines, default=str).decode())


_COUNT = "UPDATE statements SET lines = $2, credits = $3 WHERE statement_id = $1"


async def count_statement(conn: asyncpg.Connection, statement_id: str, lines: int, credits: int) -> None:
    """The statement's line and credit counts, once its file is read whole (claimed before)."""
    await conn.execute(_COUNT, statement_id, lines, credits)


_ADVANCE = (
    "UPDATE statements SET lines_done = $2, matched = matched + $3, unmatched = unmatched + $4,"
    " skipped = skipped + $5, duplicates = duplicates + $6,"
    " status = CASE WHEN $2 >= lines THEN 'imported' ELSE status END,"
    " completed_at = CASE WHEN $2 >= lines THEN $7 ELSE completed_at END"
    " WHERE statement_id = $1"
)


async def advance_statement(
    conn: asyncpg.Connection, statement_id: str, lines_done: int, counts: dict[str, int], now: datetime
) -> None:
    """Record a chunk done: its counts added, and the statement imported once every line is."""
    await conn.execute(
        _ADVANCE,
        statement_id,
        lines_done,
        counts["matched"],
        counts["unmatched"],
        counts["skipped"],
        counts["duplicates"],
        now,
    )


_GET = f"SELECT {STATEMENT_COLUMNS} FROM statements WHERE tenant_id = $1 AND statement_id = $2"


async def get_statement(conn: Conn, tenant_id: str, statement_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, tenant_id, statement_id)


_LIST = (
    f"SELECT {STATEMENT_COLUMNS} FROM statements WHERE tenant_id = $1 AND ($2::text IS NULL OR statement_id > $2)"
    " ORDER BY statement_id LIMIT $3"
)


async def list_statements(conn: Conn, tenant_id: str, *, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST, tenant_id, after, limit)


_LINES = (
    f"SELECT {LINE_COLUMNS} FROM statement_lines WHERE statement_id = ANY($1::text[]) AND position > $2"
    " ORDER BY array_position($1::text[], statement_id), position LIMIT $3"
)


async def statement_lines(conn: Conn, statement_ids: list[str], *, after: int, limit: int) -> list[asyncpg.Record]:
    """Lines of the statements in the given order, then by position (`after`: a position in the first)."""
    return await conn.fetch(_LINES, statement_ids, after, limit)


_ALLOCATED_TO = (
    "SELECT payment_id, array_agg(invoice_id ORDER BY created_at, allocation_id) AS invoice_ids FROM allocations"
    " WHERE payment_id = ANY($1::text[]) AND unallocated_at IS NULL GROUP BY payment_id"
)


async def allocated_invoices(conn: Conn, payment_ids: list[str]) -> dict[str, list[str]]:
    """The invoices each payment is allocated to now, in the order of allocation."""
    rows = await conn.fetch(_ALLOCATED_TO, payment_ids)
    return {r["payment_id"]: list(r["invoice_ids"]) for r in rows}
