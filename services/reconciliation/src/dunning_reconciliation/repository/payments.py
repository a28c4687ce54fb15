"""SQL of payments and where they come from: Stripe webhook secrets and events, the payments
table (received, matched late, refused), the API's idempotency answers and listing."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dunning_reconciliation.domain import IncomingPayment
from dunning_reconciliation.repository.base import Conn

PAYMENT_COLUMNS = (
    "payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id, status, currency,"
    " amount, amount_applied, unapplied_amount, balance_remaining, settled, match_invoice_id,"
    " match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, applied_at"
)


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
