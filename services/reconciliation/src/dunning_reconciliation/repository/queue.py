"""SQL of the unmatched queue and manual allocations: the payments listing with its filters, the
invoices a person allocates to, and the answers kept under an Idempotency-Key."""

from typing import Any

import asyncpg

from dunning_reconciliation.repository.base import Conn
from dunning_reconciliation.repository.payments import PAYMENT_COLUMNS

# `invoice_id`: the payments with an allocation to it (or, not yet allocated, naming it).
_LIST_PAYMENTS = (
    f"SELECT {PAYMENT_COLUMNS} FROM payments p WHERE tenant_id = $1"
    " AND ($2::text IS NULL OR invoice_id = $2 OR EXISTS (SELECT 1 FROM allocations a"
    " WHERE a.payment_id = p.payment_id AND a.invoice_id = $2))"
    " AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR customer_id = $4)"
    " AND ($5::text IS NULL OR source = $5) AND ($6::text IS NULL OR payment_id > $6)"
    " ORDER BY payment_id LIMIT $7"
)


async def list_payments(
    conn: Conn,
    tenant_id: str,
    *,
    invoice_id: str | None,
    status: str | None,
    customer_id: str | None,
    source: str | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST_PAYMENTS, tenant_id, invoice_id, status, customer_id, source, after, limit)


_INVOICES_NAMED = (
    "SELECT invoice_id, external_id, number, currency, balance, status, customer_id FROM invoices"
    " WHERE tenant_id = $1 AND (invoice_id = ANY ($2::text[]) OR external_id = ANY ($3::text[]))"
)


async def invoices_named(
    conn: Conn, tenant_id: str, invoice_ids: list[str], external_ids: list[str]
) -> list[asyncpg.Record]:
    """The tenant's invoices with one of the ids or external ids (unlocked: allocate() locks)."""
    return await conn.fetch(_INVOICES_NAMED, tenant_id, invoice_ids, external_ids)


_ALLOCATION_REQUEST = (
    "SELECT payment_id, fingerprint, status, response FROM allocation_requests"
    " WHERE tenant_id = $1 AND idempotency_key = $2"
)


async def allocation_request(conn: Conn, tenant_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_ALLOCATION_REQUEST, tenant_id, key)


_STORE_ALLOCATION_REQUEST = (
    "INSERT INTO allocation_requests (tenant_id, idempotency_key, payment_id, fingerprint, status, response)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)


async def store_allocation_request(
    conn: asyncpg.Connection,
    tenant_id: str,
    key: str,
    *,
    payment_id: str,
    fingerprint: str,
    status: int,
    response: dict[str, Any],
) -> None:
    await conn.execute(_STORE_ALLOCATION_REQUEST, tenant_id, key, payment_id, fingerprint, status, response)
