"""The write-off report (`GET /v1/write-offs`): each invoice written off in a period, with the
balance reconciliation held when it applied the write-off, and totals per currency for the whole
period (read in the page's snapshot). Pages run in (written_off_at, invoice_id) order; the cursor
carries that pair."""

import re
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dunning.http import Problem, decode_cursor, page
from dunning_reconciliation import repository as repo
from dunning_reconciliation.schemas import currency_total, write_off_view

# What a cursor carries: the last row's written_off_at (UTC, microseconds) and invoice id.
_KEY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\|inv_[0-9A-Za-z]{10,40}$")
_KEY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _key(row: asyncpg.Record) -> str:
    return f"{row['written_off_at'].astimezone(UTC).strftime(_KEY_TIME)}|{row['invoice_id']}"


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    key = decode_cursor(cursor, _KEY)
    if key is None:
        return None
    at, invoice_id = key.split("|")
    return datetime.strptime(at, _KEY_TIME).replace(tzinfo=UTC), invoice_id


async def report(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of the period [start, end) (either end open when None), and the period's totals."""
    if start is not None and end is not None and end <= start:
        raise Problem.invalid("to", "must be after `from`", "invalid_period")
    after = _after(cursor)
    # One snapshot: the page and the totals agree.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await repo.list_write_offs(conn, tenant_id, start=start, end=end, after=after, limit=limit + 1)
        totals = await repo.write_off_totals(conn, tenant_id, start=start, end=end)
    body = page(rows, limit, key=_key, view=write_off_view)
    return {**body, "totals": [currency_total(t) for t in totals]}
