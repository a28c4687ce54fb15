"""SQL of payments and where they come from: Stripe webhook secrets and events, the payments
table (received, matched late, refused), the API's idempotency answers and listing."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dunning_reconciliation.domain import IncomingPayment
from dunning_reconciliation.repository.base import Conn

PAYMENT_COLUMNS = (
    "payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id, status, currency,"
    " amount, amount_applied, unapplied_amount, balance_remaining, settled, match_invoice_id,"
    " match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, applied_at,"
    " amount_refunded, unallocated_amount, customer_id, payer_name, payer_account, remittance,"
    " creditor_reference, statement_id, suggestions, match_rule, match_reason"
)


_ADD_WEBHOOK_SECRET = (
    "INSERT INTO webhook_secrets (tenant_id, secret, expires_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (tenant_id, secret) DO UPDATE SET expires_at = EXCLUDED.expires_at, revoked_at = NULL"
)


async def add_webhook_secret(conn: Conn, tenant_id: str, secret: str, *, expires_at: datetime | None = None) -> None:
    """For the admin CLI (and tests): register a Stripe endpoint secret for a tenant (the other
    processors' secrets, and rotation: webhook_secrets.py, POST /v1/webhook-secrets)."""
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


# A payment is inserted once (a late match, a manual allocation, a processing debit that succeeds
# find their row); its money columns are then recomputed from its allocations and credit only
# (update_payment), so they cannot drift from them.
_INSERT_PAYMENT = (
    "INSERT INTO payments (payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id,"
    " status, currency, amount, amount_applied, unapplied_amount, unallocated_amount, match_invoice_id,"
    " match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, customer_id, payer_name,"
    " payer_account, remittance, creditor_reference, statement_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $9, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,"
    " $20, $21) ON CONFLICT (payment_id) DO NOTHING RETURNING true"
)


async def insert_payment(
    conn: asyncpg.Connection,
    p: IncomingPayment,
    *,
    status: str,
    acknowledged_at: datetime,
    invoice_id: str | None = None,
) -> bool:
    """Insert the payment, all of it unallocated; False if its row exists already (nothing changed)."""
    inserted = await conn.fetchval(
        _INSERT_PAYMENT,
        p.payment_id,
        p.tenant_id,
        invoice_id,
        p.source,
        p.source_reference,
        p.stripe_object_id,
        status,
        p.currency,
        p.amount,
        p.keys.invoice_id,
        list(p.keys.external_ids),
        list(p.keys.numbers),
        p.fingerprint,
        p.received_at,
        acknowledged_at,
        p.customer_id,
        p.payer_name,
        p.payer_account,
        p.remittance,
        p.creditor_reference,
        p.statement_id,
    )
    return bool(inserted)


_LOCK_PAYMENT = "SELECT {columns} FROM payments WHERE tenant_id = $1 AND {where} FOR UPDATE"
_LOCK_PAYMENT_BY = {
    "payment_id": _LOCK_PAYMENT.format(columns=PAYMENT_COLUMNS, where="payment_id = $2"),
    "reference": _LOCK_PAYMENT.format(columns=PAYMENT_COLUMNS, where="source = $2 AND source_reference = $3"),
    "stripe_object_id": _LOCK_PAYMENT.format(columns=PAYMENT_COLUMNS, where="stripe_object_id = $2"),
}


async def lock_payment(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    payment_id: str | None = None,
    source: str | None = None,
    source_reference: str | None = None,
    stripe_object_id: str | None = None,
) -> asyncpg.Record | None:
    """The tenant's payment named by its id, (source, reference) or Stripe object, locked; None if unknown."""
    if payment_id:
        return await conn.fetchrow(_LOCK_PAYMENT_BY["payment_id"], tenant_id, payment_id)
    if source and source_reference:
        return await conn.fetchrow(_LOCK_PAYMENT_BY["reference"], tenant_id, source, source_reference)
    if stripe_object_id:
        return await conn.fetchrow(_LOCK_PAYMENT_BY["stripe_object_id"], tenant_id, stripe_object_id)
    return None


# The money columns from the payment's active allocations and its credit; the status from them unless
# given (processing, failed, rejected_currency_mismatch, invoice_closed are given): all taken back ->
# reversed; nothing unallocated -> applied; some allocated or credited -> partially_allocated; else
# unmatched (the queue).
_UPDATE_PAYMENT = (
    "UPDATE payments p SET amount_applied = t.applied, unapplied_amount = p.amount - t.applied - t.refunded,"
    " unallocated_amount = p.amount - t.applied - t.credited - t.refunded, amount_refunded = t.refunded,"
    " status = coalesce($2, CASE WHEN t.refunded >= p.amount THEN 'reversed'"
    " WHEN p.amount - t.applied - t.credited - t.refunded <= 0 THEN 'applied'"
    " WHEN t.applied + t.credited > 0 THEN 'partially_allocated' ELSE 'unmatched' END),"
    " invoice_id = coalesce($3, p.invoice_id), balance_remaining = CASE WHEN $3::text IS NULL"
    " THEN p.balance_remaining ELSE $4 END, settled = coalesce($5, p.settled),"
    " applied_at = coalesce(p.applied_at, $6), match_rule = coalesce($7, p.match_rule),"
    " match_reason = coalesce($8, p.match_reason)"
    " FROM (SELECT (SELECT coalesce(sum(amount), 0) FROM allocations WHERE payment_id = $1"
    " AND unallocated_at IS NULL) AS applied,"
    " (SELECT coalesce(sum(amount), 0) FROM customer_credits WHERE source_payment_id = $1) AS credited,"
    " (SELECT amount_refunded + $9 FROM payments WHERE payment_id = $1) AS refunded) t"
    f" WHERE p.payment_id = $1 RETURNING {', '.join('p.' + c.strip() for c in PAYMENT_COLUMNS.split(','))}"
)


async def update_payment(
    conn: asyncpg.Connection,
    payment_id: str,
    *,
    status: str | None = None,
    invoice_id: str | None = None,
    balance_remaining: Decimal | None = None,
    settled: bool | None = None,
    applied_at: datetime | None = None,
    match_rule: str | None = None,
    match_reason: str | None = None,
    refunded: Decimal = Decimal(0),
) -> asyncpg.Record:
    """Recompute the (locked) payment's money from its allocations and credit, after adding `refunded`
    to what was taken back; `invoice_id` (with its balance) names the invoice last touched."""
    return await conn.fetchrow(
        _UPDATE_PAYMENT,
        payment_id,
        status,
        invoice_id,
        balance_remaining,
        settled,
        applied_at,
        match_rule,
        match_reason,
        refunded,
    )


_SET_SUGGESTIONS = "UPDATE payments SET suggestions = $2::text::jsonb WHERE payment_id = $1"


async def set_suggestions(conn: asyncpg.Connection, payment_id: str, suggestions: list[dict] | None) -> None:
    """The unmatched queue's candidates for the payment (None: none kept)."""
    text = None if suggestions is None else orjson.dumps(suggestions).decode()
    await conn.execute(_SET_SUGGESTIONS, payment_id, text)


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


# --- the fast path of a run of new, wholly allocated payments (allocations_batch) ---------------------

_EXISTING_PAYMENTS = "SELECT payment_id FROM payments WHERE payment_id = ANY ($1::text[])"


async def existing_payments(conn: asyncpg.Connection, payment_ids: list[str]) -> set[str]:
    return {r["payment_id"] for r in await conn.fetch(_EXISTING_PAYMENTS, payment_ids)}


# The row update_payment leaves for a new payment wholly allocated: applied, nothing left over.
_INSERT_APPLIED_PAYMENTS = (
    "INSERT INTO payments (payment_id, tenant_id, invoice_id, source, source_reference, stripe_object_id,"
    " status, currency, amount, amount_applied, unapplied_amount, unallocated_amount, balance_remaining, settled,"
    " match_invoice_id, match_external_ids, match_numbers, fingerprint, received_at, acknowledged_at, applied_at,"
    " customer_id, payer_name, payer_account, remittance, creditor_reference, statement_id, match_rule,"
    " match_reason)"
    " SELECT r.payment_id, r.tenant_id, r.invoice_id, r.source, r.source_reference, r.stripe_object_id,"
    " 'applied', r.currency, r.amount, r.amount, 0, 0, r.balance_remaining, r.settled, r.match_invoice_id,"
    " r.match_external_ids, r.match_numbers, r.fingerprint, r.received_at,"
    " r.acknowledged_at, r.applied_at, r.customer_id, r.payer_name, r.payer_account, r.remittance,"
    " r.creditor_reference, r.statement_id, r.match_rule, r.match_reason"
    " FROM json_to_recordset($1::text::json) AS r(payment_id text, tenant_id text, invoice_id text, source text,"
    " source_reference text, stripe_object_id text, currency text, amount numeric, balance_remaining numeric,"
    " settled boolean, match_invoice_id text, match_external_ids text[], match_numbers text[], fingerprint text,"
    " received_at timestamptz, acknowledged_at timestamptz, applied_at timestamptz, customer_id text,"
    " payer_name text, payer_account text, remittance text, creditor_reference text, statement_id text,"
    " match_rule text, match_reason text)"
)


async def insert_applied_payments(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """New payments, each wholly allocated (dicts of the columns above; JSON values)."""
    await conn.execute(_INSERT_APPLIED_PAYMENTS, orjson.dumps(rows).decode())
