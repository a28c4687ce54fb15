"""How a statement and its lines read in the API (and in `import_statement`'s answer): amounts as
decimal strings in the currency's exponent, dates as ISO dates."""

from collections.abc import Mapping, Sequence
from typing import Any

from dunning.clock import isoformat
from dunning.money import format_amount
from dunning_reconciliation.repository import statements as statement_repo
from dunning_reconciliation.repository.base import Conn

MAX_OUTCOMES = 1000  # per-line outcomes in an import's answer; the rest are paged by GET …/lines
COUNTS = ("lines", "credits", "matched", "unmatched", "skipped", "duplicates")


def _amount(value: Any, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def _day(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def statement_view(row: Mapping[str, Any], *, duplicate: bool = False) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "statement_id": row["statement_id"],
        "format": row["format"],
        "filename": row["filename"],
        "account": row["account"],
        "bank_statement_id": row["bank_statement_id"],
        "currency": currency,
        "opening_balance": _amount(row["opening_balance"], currency),
        "closing_balance": _amount(row["closing_balance"], currency),
        "status": row["status"],
        **{k: row[k] for k in COUNTS},
        "duplicate": duplicate,
        "imported_at": isoformat(row["imported_at"]),
        "completed_at": isoformat(row["completed_at"]) if row["completed_at"] else None,
    }


def line_view(row: Mapping[str, Any]) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "statement_id": row["statement_id"],
        "position": row["position"],
        "line_key": row["line_key"],
        "kind": row["kind"],
        "status": row["status"],
        "amount": _amount(row["amount"], currency),
        "currency": currency,
        "booking_date": _day(row["booking_date"]),
        "value_date": _day(row["value_date"]),
        "payer_name": row["payer_name"],
        "payer_account": row["payer_account"],
        "remittance": row["remittance"],
        "creditor_reference": row["creditor_reference"],
        "end_to_end_id": row["end_to_end_id"],
        "bank_reference": row["bank_reference"],
        "note": row["note"],
        "payment_id": row["payment_id"],
        "invoice_ids": list(row["invoice_ids"] or []),
    }


async def import_view(
    conn: Conn, rows: Sequence[Mapping[str, Any]], *, duplicate: bool, duplicate_ids: set[str]
) -> dict[str, Any]:
    """An import's answer: totals over the file's statements, each statement, and the first
    MAX_OUTCOMES lines' outcomes (a duplicate statement's lines are those of its first import)."""
    ids = [r["statement_id"] for r in rows]
    fresh = {r["statement_id"]: r for r in await _rows(conn, rows)}
    statements = [statement_view(fresh[i], duplicate=duplicate or i in duplicate_ids) for i in ids]
    lines = await statement_repo.statement_lines(conn, ids, after=0, limit=MAX_OUTCOMES + 1)
    first = rows[0] if rows else {}
    return {
        "duplicate": duplicate,
        "filename": first.get("filename") if rows else None,
        "format": first.get("format") if rows else None,
        "file_sha256": first.get("file_sha256") if rows else None,
        **{k: sum(s[k] for s in statements) for k in COUNTS},
        "statements": statements,
        "outcomes": [line_view(r) for r in lines[:MAX_OUTCOMES]],
        "outcomes_truncated": len(lines) > MAX_OUTCOMES,
    }


async def _rows(conn: Conn, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The statements' rows as they stand now (counts written by the chunks since the claim)."""
    tenant_id = rows[0]["tenant_id"] if rows else ""
    out = []
    for r in rows:
        out.append(await statement_repo.get_statement(conn, tenant_id, r["statement_id"]) or r)
    return out
