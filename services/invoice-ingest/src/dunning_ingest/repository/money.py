"""The changes of an invoice's balance besides payments and credit notes (money_entries: an allocation
undone, money reversed, customer credit applied) and the money whose fate is open (pending_money: a
debit still processing, a disputed card payment), as reconciliation's events report them."""

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg
import orjson


class MoneyEntry(NamedTuple):
    """One row of money_entries. `amount` > 0 is what moved; `applied` its signed effect on what the
    invoice has had applied (credit_applied: +amount; reversed, unallocated: -amount)."""

    invoice_id: str
    kind: str  # unallocated | reversed | credit_applied
    entry_id: str  # the event's id field: the allocation, reversal or application id
    tenant_id: str
    payment_id: str
    currency: str
    amount: Decimal
    applied: Decimal
    balance_remaining: Decimal
    settled: bool
    balance_version: int
    at: datetime
    reason: str | None
    data: dict[str, Any]


_RECORD_ENTRY = """
INSERT INTO money_entries (invoice_id, kind, entry_id, tenant_id, payment_id, currency, amount, applied,
                           balance_remaining, settled, balance_version, at, reason, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text::jsonb)
ON CONFLICT (invoice_id, kind, entry_id) DO NOTHING RETURNING true
"""


async def record_money_entry(conn: asyncpg.Connection, e: MoneyEntry) -> bool:
    """Insert the entry (idempotent by invoice, kind and the event's id field); True if it is new."""
    args = list(e)
    args[-1] = orjson.dumps(e.data).decode()
    return bool(await conn.fetchval(_RECORD_ENTRY, *args))


_ENTRIES_OF = "SELECT * FROM money_entries WHERE invoice_id = $1 ORDER BY at, balance_version, entry_id"


async def money_entries_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_ENTRIES_OF, invoice_id)


_OPEN_PENDING = """
INSERT INTO pending_money (invoice_id, payment_id, kind, tenant_id, source, source_reference, currency, amount,
                           since, acknowledged_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (invoice_id, payment_id, kind, since) DO NOTHING RETURNING true
"""


async def open_pending(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    payment_id: str,
    kind: str,
    tenant_id: str,
    source: str,
    source_reference: str,
    currency: str,
    amount: Decimal,
    since: datetime,
    acknowledged_at: datetime,
) -> bool:
    """Record an episode of money pending on the invoice; True if it is new."""
    row = await conn.fetchval(
        _OPEN_PENDING,
        invoice_id,
        payment_id,
        kind,
        tenant_id,
        source,
        source_reference,
        currency,
        amount,
        since,
        acknowledged_at,
    )
    return bool(row)


# The latest open episode of that kind (at most one is open but for a lost end).
_END_PENDING = """
UPDATE pending_money AS p SET ended_at = $4, outcome = $5, ended_reference = $6
  FROM (SELECT since FROM pending_money
         WHERE invoice_id = $1 AND payment_id = $2 AND kind = $3 AND ended_at IS NULL
         ORDER BY since DESC LIMIT 1 FOR UPDATE) AS o
 WHERE p.invoice_id = $1 AND p.payment_id = $2 AND p.kind = $3 AND p.since = o.since
RETURNING p.amount
"""


async def end_pending(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    payment_id: str,
    kind: str,
    ended_at: datetime,
    outcome: str,
    reference: str,
) -> Decimal | None:
    """End the open episode: the amount that was pending, or None if none was open (ended already,
    or its PaymentPending never came)."""
    return await conn.fetchval(_END_PENDING, invoice_id, payment_id, kind, ended_at, outcome, reference)


_PENDING_OF = "SELECT * FROM pending_money WHERE invoice_id = $1 ORDER BY since, payment_id, kind"


async def pending_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_PENDING_OF, invoice_id)
