"""SQL of Stripe's other ids for a payment (stripe_links) and the refunds Stripe reported
(stripe_refunds): how a refund or a dispute finds its payment, and how much Stripe refunded of it."""

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

_PAYMENT_BY_STRIPE_IDS = (
    "SELECT p.payment_id, p.status, p.currency, p.invoice_id FROM payments p WHERE p.tenant_id = $1"
    " AND (p.stripe_object_id = ANY ($2::text[]) OR p.payment_id IN"
    " (SELECT l.payment_id FROM stripe_links l WHERE l.tenant_id = $1 AND l.object_id = ANY ($2::text[])))"
    " ORDER BY p.status = 'failed', array_position($2::text[], p.stripe_object_id) NULLS LAST, p.received_at DESC"
    " LIMIT 1"
)


async def payment_by_stripe_ids(
    conn: asyncpg.Connection, tenant_id: str, object_ids: Sequence[str]
) -> asyncpg.Record | None:
    """The payment (payment_id, status, currency, invoice_id) carried by, or linked to, one of these
    Stripe ids: a live one before a failed attempt, the object's own before a linked one."""
    if not object_ids:
        return None
    return await conn.fetchrow(_PAYMENT_BY_STRIPE_IDS, tenant_id, list(object_ids))


_LINK = (
    "INSERT INTO stripe_links (tenant_id, object_id, payment_id)"
    " SELECT $1, o, $3 FROM unnest($2::text[]) AS o ON CONFLICT (tenant_id, object_id) DO NOTHING"
)


async def link(conn: asyncpg.Connection, tenant_id: str, payment_id: str, object_ids: Sequence[str]) -> None:
    """Remember other Stripe ids of the payment's money (the first payment linked keeps an id)."""
    if object_ids:
        await conn.execute(_LINK, tenant_id, list(object_ids), payment_id)


_CLAIM_LINK = (
    "INSERT INTO stripe_links (tenant_id, object_id, payment_id) VALUES ($1, $2, $3)"
    " ON CONFLICT (tenant_id, object_id) DO NOTHING RETURNING true"
)


async def claim_link(conn: asyncpg.Connection, tenant_id: str, payment_id: str, object_id: str) -> bool:
    """Link one id to the payment; False if it was linked before (a dispute opened or closed twice)."""
    return bool(await conn.fetchval(_CLAIM_LINK, tenant_id, object_id, payment_id))


_REFUND_STATUS = "SELECT status FROM stripe_refunds WHERE tenant_id = $1 AND refund_key = $2"


async def refund_status(conn: asyncpg.Connection, tenant_id: str, refund_key: str) -> str | None:
    return await conn.fetchval(_REFUND_STATUS, tenant_id, refund_key)


_SAVE_REFUND = (
    "INSERT INTO stripe_refunds (tenant_id, refund_key, kind, payment_id, currency, amount, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, refund_key) DO UPDATE SET"
    " amount = CASE WHEN stripe_refunds.kind = 'charge' THEN GREATEST(stripe_refunds.amount, EXCLUDED.amount)"
    " ELSE EXCLUDED.amount END, status = EXCLUDED.status, updated_at = now()"
)


async def save_refund(
    conn: asyncpg.Connection,
    tenant_id: str,
    refund_key: str,
    *,
    kind: str,
    payment_id: str,
    currency: str,
    amount: Decimal,
    status: str,
) -> None:
    """A refund's amount and latest status (a charge's cumulative refunded: the largest seen)."""
    await conn.execute(_SAVE_REFUND, tenant_id, refund_key, kind, payment_id, currency, amount, status)


_REFUNDED = (
    "SELECT GREATEST("
    " (SELECT coalesce(sum(amount), 0) FROM stripe_refunds WHERE tenant_id = $1 AND payment_id = $2"
    "  AND kind = 'charge'),"
    " (SELECT coalesce(sum(amount), 0) FROM stripe_refunds WHERE tenant_id = $1 AND payment_id = $2"
    "  AND kind = 'refund' AND status = 'succeeded')) AS reported,"
    " (SELECT coalesce(sum(amount), 0) FROM reversals WHERE tenant_id = $1 AND payment_id = $2"
    "  AND source = 'stripe' AND kind = 'refund') AS reversed"
)


async def refunded(conn: asyncpg.Connection, tenant_id: str, payment_id: str) -> tuple[Decimal, Decimal]:
    """(what Stripe reported refunded of the payment, what reconciliation has reversed for it)."""
    row = await conn.fetchrow(_REFUNDED, tenant_id, payment_id)
    return row["reported"], row["reversed"]


_RELEASE_FAILED = (
    "WITH released AS (UPDATE payments SET stripe_object_id = NULL WHERE tenant_id = $1 AND stripe_object_id = $2"
    " AND status = 'failed' RETURNING payment_id),"
    " unlinked AS (DELETE FROM stripe_links WHERE tenant_id = $1 AND payment_id IN (SELECT payment_id FROM released))"
    " SELECT payment_id FROM released"
)


async def release_failed(conn: asyncpg.Connection, tenant_id: str, object_id: str) -> str | None:
    """A failed attempt of a Stripe object lets go of the object's ids (its own and its links), so that
    the object's next attempt (a PaymentIntent retried after a failed debit) is a payment of its own."""
    return await conn.fetchval(_RELEASE_FAILED, tenant_id, object_id)
