"""SQL for reconciliation's tables (schema `reconciliation`). Every write takes the caller's connection,
so it joins the caller's transaction."""

from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg
import orjson

from dunning.logging import get_logger
from dunning_reconciliation.domain import IncomingPayment, MatchKeys, invoice_status

log = get_logger(__name__)
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

PAYMENT_COLUMNS = (
    "payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id, status, currency,"
    " amount, amount_applied, unapplied_amount, balance_remaining, settled, match_invoice_id,"
    " match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, applied_at"
)


# --- locks -----------------------------------------------------------------------------------------

# Advisory lock keys (bigint) of the payments watermark: the acknowledgement fence, and the publisher
# election (see watermark.py and docs/cancel-guarantee.md#the-payments-watermark).
ACK_FENCE = 0x5041_594D_454E_5401  # "PAYMENT" 01
WATERMARK_PUBLISHER = 0x5041_594D_454E_5402
_ACKNOWLEDGE_TIME = "SELECT clock_timestamp() FROM pg_advisory_xact_lock_shared($1) AS fence"
_CLOCK = "SELECT clock_timestamp()"
_TRY_LEAD = "SELECT pg_try_advisory_lock($1)"
_RESIGN = "SELECT pg_advisory_unlock_all()"
# The transactions holding the fence now, and the earliest start among them (unknown: a start time
# this role cannot see).
_FENCE_HOLDERS = """
SELECT count(*) AS holders, count(*) FILTER (WHERE a.xact_start IS NULL) AS unknown, min(a.xact_start) AS oldest
FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
"""
# One snapshot: the oldest payment event still in the outbox, the invoices topic's applied positions,
# and the payments offsets the broker acknowledged.
_WATERMARK_SNAPSHOT = """
SELECT clock_timestamp() AS read_at,
       (SELECT min(created_at) FROM outbox WHERE topic = $1) AS oldest_waiting,
       (SELECT coalesce(jsonb_object_agg(partition::text, next_offset), '{}'::jsonb)
          FROM consumer_positions WHERE topic = $2) AS positions,
       (SELECT coalesce(jsonb_object_agg(partition::text, next_offset), '{}'::jsonb)
          FROM published_offsets WHERE topic = $1) AS published
"""


async def acknowledge_time(conn: asyncpg.Connection) -> datetime:
    """Call first in a transaction that acknowledges a payment: join the fence, then read the clock.
    The shared lock is held until the transaction ends."""
    return await conn.fetchval(_ACKNOWLEDGE_TIME, ACK_FENCE)


async def clock(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval(_CLOCK)


async def try_lead_watermark(conn: asyncpg.Connection) -> bool:
    """Take the publisher's session lock if no other replica holds it."""
    return bool(await conn.fetchval(_TRY_LEAD, WATERMARK_PUBLISHER))


async def resign_watermark(conn: asyncpg.Connection) -> None:
    await conn.execute(_RESIGN)


async def fence_holders(conn: asyncpg.Connection) -> asyncpg.Record:
    """(holders, unknown, oldest) of the acknowledgement fence, now."""
    return await conn.fetchrow(_FENCE_HOLDERS, ACK_FENCE >> 32, ACK_FENCE & 0xFFFF_FFFF)


async def watermark_snapshot(conn: asyncpg.Connection, payments_topic: str, invoices_topic: str) -> asyncpg.Record:
    """(read_at, oldest_waiting, positions, published) in one statement."""
    return await conn.fetchrow(_WATERMARK_SNAPSHOT, payments_topic, invoices_topic)


_LOCK_NAMES = "SELECT pg_advisory_xact_lock(hashtextextended(name, 0)) FROM unnest($1::text[]) AS name"


async def lock_names(conn: asyncpg.Connection, names: list[str] | set[str]) -> None:
    """Transaction-scoped advisory locks, taken in sorted order in one statement (so two takers
    cannot deadlock)."""
    await conn.execute(_LOCK_NAMES, sorted(set(names)))


# --- webhook secrets and Stripe events ------------------------------------------------------------

_ACTIVE_WEBHOOK_SECRETS = (
    "SELECT secret FROM webhook_secrets WHERE tenant_id = $1 AND revoked_at IS NULL"
    " AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at DESC"
)


async def active_webhook_secrets(conn: Conn, tenant_id: str) -> list[str]:
    rows = await conn.fetch(_ACTIVE_WEBHOOK_SECRETS, tenant_id)
    return [r["secret"] for r in rows]


_ADD_WEBHOOK_SECRET = (
    "INSERT INTO webhook_secrets (tenant_id, secret, expires_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (tenant_id, secret) DO UPDATE SET expires_at = EXCLUDED.expires_at, revoked_at = NULL"
)


async def add_webhook_secret(conn: Conn, tenant_id: str, secret: str, *, expires_at: datetime | None = None) -> None:
    """For the admin CLI (and tests): register a Stripe endpoint secret for a tenant."""
    await conn.execute(_ADD_WEBHOOK_SECRET, tenant_id, secret, expires_at)


_CLAIM_STRIPE_EVENT = (
    "INSERT INTO stripe_events (tenant_id, event_id, type) VALUES ($1, $2, $3)"
    " ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING true"
)


async def claim_stripe_event(conn: asyncpg.Connection, tenant_id: str, event_id: str, event_type: str) -> bool:
    """Record the event as seen; False if it was seen before (a concurrent replay waits, then gets False)."""
    inserted = await conn.fetchval(_CLAIM_STRIPE_EVENT, tenant_id, event_id, event_type)
    return bool(inserted)


_FINISH_STRIPE_EVENT = "UPDATE stripe_events SET outcome = $3, payment_id = $4 WHERE tenant_id = $1 AND event_id = $2"


async def finish_stripe_event(
    conn: asyncpg.Connection, tenant_id: str, event_id: str, outcome: str, payment_id: str | None
) -> None:
    await conn.execute(_FINISH_STRIPE_EVENT, tenant_id, event_id, outcome, payment_id)


_STRIPE_OBJECT_PAYMENT = "SELECT payment_id FROM payments WHERE tenant_id = $1 AND stripe_object_id = $2"


async def stripe_object_payment(conn: asyncpg.Connection, tenant_id: str, object_id: str) -> str | None:
    return await conn.fetchval(_STRIPE_OBJECT_PAYMENT, tenant_id, object_id)


# --- invoices --------------------------------------------------------------------------------------

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
    "SELECT invoice_id, tenant_id, external_id, number, currency, amount_due, balance, status"
    " FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
)


async def lock_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record:
    return await conn.fetchrow(_LOCK_INVOICE, tenant_id, invoice_id)


_INVOICE_EXTERNAL_ID = "SELECT external_id FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"


async def invoice_external_id(conn: Conn, tenant_id: str, invoice_id: str) -> str | None:
    return await conn.fetchval(_INVOICE_EXTERNAL_ID, tenant_id, invoice_id)


_SET_INVOICE_BALANCE = "UPDATE invoices SET balance = $2, status = $3, updated_at = now() WHERE invoice_id = $1"


async def set_invoice_balance(conn: asyncpg.Connection, invoice_id: str, balance: Decimal, status: str) -> None:
    await conn.execute(_SET_INVOICE_BALANCE, invoice_id, balance, status)


# --- payments --------------------------------------------------------------------------------------

_SAVE_PAYMENT = (
    f"INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES"
    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    " ON CONFLICT (payment_id) DO UPDATE SET invoice_id = EXCLUDED.invoice_id, status = EXCLUDED.status,"
    " amount_applied = EXCLUDED.amount_applied, unapplied_amount = EXCLUDED.unapplied_amount,"
    " balance_remaining = EXCLUDED.balance_remaining, settled = EXCLUDED.settled,"
    " applied_at = EXCLUDED.applied_at"
)


async def save_payment(
    conn: asyncpg.Connection,
    p: IncomingPayment,
    *,
    invoice_id: str | None,
    status: str,
    amount_applied: Decimal,
    unapplied_amount: Decimal,
    balance_remaining: Decimal | None,
    settled: bool,
    acknowledged_at: datetime,
    applied_at: datetime | None,
) -> None:
    """Insert the payment, or (a late match) update the unmatched row with the same id."""
    await conn.execute(
        _SAVE_PAYMENT,
        p.payment_id,
        p.tenant_id,
        invoice_id,
        p.source,
        p.source_reference,
        p.stripe_object_id,
        status,
        p.currency,
        p.amount,
        amount_applied,
        unapplied_amount,
        balance_remaining,
        settled,
        p.keys.invoice_id,
        list(p.keys.external_ids),
        list(p.keys.numbers),
        p.fingerprint,
        p.received_at,
        acknowledged_at,
        applied_at,
    )


_UNMATCHED_FOR_INVOICE = (
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1 AND status = 'unmatched'"
    " AND (match_invoice_id = $2 OR $3 = ANY (match_external_ids) OR $4 = ANY (match_numbers))"
    " ORDER BY received_at, payment_id FOR UPDATE"
)


async def unmatched_for_invoice(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, external_id: str, number: str
) -> list[asyncpg.Record]:
    """Payments that arrived before this invoice and name it by any key, oldest first (locked)."""
    return await conn.fetch(_UNMATCHED_FOR_INVOICE, tenant_id, invoice_id, external_id, number)


_PAYMENT_BY_REFERENCE = (
    "SELECT payment_id, fingerprint, response FROM payments"
    " WHERE tenant_id = $1 AND source = $2 AND source_reference = $3"
)


async def payment_by_reference(
    conn: asyncpg.Connection, tenant_id: str, source: str, reference: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(_PAYMENT_BY_REFERENCE, tenant_id, source, reference)


_GET_PAYMENT = f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1 AND payment_id = $2"


async def get_payment(conn: Conn, tenant_id: str, payment_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_PAYMENT, tenant_id, payment_id)


_STORE_RESPONSE = "UPDATE payments SET response = $2 WHERE payment_id = $1"


async def store_response(conn: asyncpg.Connection, payment_id: str, response: dict[str, Any]) -> None:
    await conn.execute(_STORE_RESPONSE, payment_id, response)


_LIST_PAYMENTS = (
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1"
    " AND ($2::text IS NULL OR invoice_id = $2) AND ($3::text IS NULL OR payment_id > $3)"
    " ORDER BY payment_id LIMIT $4"
)


async def list_payments(
    conn: Conn, tenant_id: str, *, invoice_id: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST_PAYMENTS, tenant_id, invoice_id, after, limit)
