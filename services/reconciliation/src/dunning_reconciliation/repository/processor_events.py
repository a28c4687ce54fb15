"""SQL of the events of GoCardless and Standard Webhooks (the inbox of their webhooks), of the
GoCardless payments known from their events' metadata."""

from decimal import Decimal

import asyncpg

_CLAIM_EVENT = (
    "INSERT INTO processor_events (tenant_id, processor, event_id, type) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (tenant_id, processor, event_id) DO NOTHING RETURNING true"
)


async def claim_event(conn: asyncpg.Connection, tenant_id: str, processor: str, event_id: str, type_: str) -> bool:
    """Record the event as seen; False if it was seen before (a concurrent replay waits, then gets False)."""
    return bool(await conn.fetchval(_CLAIM_EVENT, tenant_id, processor, event_id, type_))


_FINISH_EVENT = (
    "UPDATE processor_events SET outcome = $4, payment_id = $5"
    " WHERE tenant_id = $1 AND processor = $2 AND event_id = $3"
)


async def finish_event(
    conn: asyncpg.Connection, tenant_id: str, processor: str, event_id: str, outcome: str, payment_id: str | None
) -> None:
    await conn.execute(_FINISH_EVENT, tenant_id, processor, event_id, outcome, payment_id)


_EVENT_OUTCOME = (
    "SELECT outcome, payment_id FROM processor_events WHERE tenant_id = $1 AND processor = $2 AND event_id = $3"
)


async def event_outcome(
    conn: asyncpg.Connection, tenant_id: str, processor: str, event_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(_EVENT_OUTCOME, tenant_id, processor, event_id)


_SAVE_GOCARDLESS_PAYMENT = (
    "INSERT INTO gocardless_payments (tenant_id, gocardless_id, invoice_id, invoice_external_id, currency, amount,"
    " status) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, gocardless_id)"
    " DO UPDATE SET status = EXCLUDED.status, updated_at = now()"
)


async def save_gocardless_payment(
    conn: asyncpg.Connection,
    tenant_id: str,
    gocardless_id: str,
    *,
    invoice_id: str | None,
    invoice_external_id: str | None,
    currency: str,
    amount: Decimal,
    status: str,
) -> None:
    """Keep what the first event with metadata told of the payment; later events update its status."""
    await conn.execute(
        _SAVE_GOCARDLESS_PAYMENT, tenant_id, gocardless_id, invoice_id, invoice_external_id, currency, amount, status
    )


_SET_GOCARDLESS_STATUS = (
    "UPDATE gocardless_payments SET status = $3, updated_at = now() WHERE tenant_id = $1 AND gocardless_id = $2"
)


async def set_gocardless_status(conn: asyncpg.Connection, tenant_id: str, gocardless_id: str, status: str) -> None:
    await conn.execute(_SET_GOCARDLESS_STATUS, tenant_id, gocardless_id, status)


_GOCARDLESS_PAYMENT = (
    "SELECT gocardless_id, invoice_id, invoice_external_id, currency, amount, status, created_at"
    " FROM gocardless_payments WHERE tenant_id = $1 AND gocardless_id = $2"
)


async def gocardless_payment(conn: asyncpg.Connection, tenant_id: str, gocardless_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GOCARDLESS_PAYMENT, tenant_id, gocardless_id)
