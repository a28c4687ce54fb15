"""SQL of customer credit: an over-payment's excess held for its customer, and its applications to
the customer's open invoices."""

from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson

from dunning_reconciliation.repository.base import Conn

CREDIT_COLUMNS = "credit_id, tenant_id, customer_id, currency, amount, remaining, source_payment_id, created_at"
APPLICATION_COLUMNS = "application_id, credit_id, invoice_id, amount, applied_at"

_INSERT_CREDIT = (
    f"INSERT INTO customer_credits ({CREDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $5, $6, $7)"
    f" RETURNING {CREDIT_COLUMNS}"
)


async def insert_credit(
    conn: asyncpg.Connection,
    *,
    credit_id: str,
    tenant_id: str,
    customer_id: str,
    currency: str,
    amount: Decimal,
    source_payment_id: str,
    created_at: datetime,
) -> asyncpg.Record:
    return await conn.fetchrow(
        _INSERT_CREDIT, credit_id, tenant_id, customer_id, currency, amount, source_payment_id, created_at
    )


_LOCK_OPEN_CREDITS = (
    f"SELECT {CREDIT_COLUMNS} FROM customer_credits WHERE tenant_id = $1 AND customer_id = $2 AND remaining > 0"
    " ORDER BY created_at, credit_id FOR UPDATE"
)


async def lock_open_credits(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> list[asyncpg.Record]:
    """The customer's credits with something left, oldest first, locked."""
    return await conn.fetch(_LOCK_OPEN_CREDITS, tenant_id, customer_id)


_LOCK_CREDIT_OF_PAYMENT = (
    f"SELECT {CREDIT_COLUMNS} FROM customer_credits WHERE source_payment_id = $1 ORDER BY created_at FOR UPDATE"
)


async def lock_credits_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_LOCK_CREDIT_OF_PAYMENT, payment_id)


_TAKE_FROM_CREDIT = "UPDATE customer_credits SET amount = amount - $2, remaining = remaining - $3 WHERE credit_id = $1"


async def take_from_credit(conn: asyncpg.Connection, credit_id: str, *, amount: Decimal, remaining: Decimal) -> None:
    """Reduce the credit's amount (a reversal) and/or what is left of it (an application, a reversal)."""
    await conn.execute(_TAKE_FROM_CREDIT, credit_id, amount, remaining)


_INSERT_APPLICATION = f"INSERT INTO credit_applications ({APPLICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"


async def insert_application(
    conn: asyncpg.Connection, *, application_id: str, credit_id: str, invoice_id: str, amount: Decimal, at: datetime
) -> None:
    await conn.execute(_INSERT_APPLICATION, application_id, credit_id, invoice_id, amount, at)


_LOCK_APPLICATIONS = (
    f"SELECT {APPLICATION_COLUMNS} FROM credit_applications WHERE credit_id = ANY ($1::text[]) AND amount > 0"
    " ORDER BY applied_at DESC, application_id DESC FOR UPDATE"
)


async def lock_applications(conn: asyncpg.Connection, credit_ids: list[str]) -> list[asyncpg.Record]:
    """The credits' applications with something applied, newest first (a reversal's order), locked."""
    return await conn.fetch(_LOCK_APPLICATIONS, credit_ids)


_REDUCE_APPLICATION = "UPDATE credit_applications SET amount = amount - $2 WHERE application_id = $1"


async def reduce_application(conn: asyncpg.Connection, application_id: str, taken: Decimal) -> None:
    await conn.execute(_REDUCE_APPLICATION, application_id, taken)


_CREDITS_OF_PAYMENTS = (
    f"SELECT {CREDIT_COLUMNS}, coalesce((SELECT jsonb_agg(jsonb_build_object('application_id', a.application_id,"
    " 'invoice_id', a.invoice_id, 'amount', a.amount::text, 'applied_at', a.applied_at)"
    " ORDER BY a.applied_at, a.application_id) FROM credit_applications a WHERE a.credit_id = c.credit_id),"
    " '[]'::jsonb)::text AS applications FROM customer_credits c WHERE source_payment_id = ANY ($1::text[])"
)


def _with_applications(row: asyncpg.Record) -> dict:
    return {**dict(row), "applications": orjson.loads(row["applications"])}


async def credits_of_payments(conn: Conn, payment_ids: list[str]) -> dict[str, dict]:
    """The credit each payment's excess became (with its applications), by payment id."""
    rows = await conn.fetch(_CREDITS_OF_PAYMENTS, payment_ids)
    return {r["source_payment_id"]: _with_applications(r) for r in rows}


_CREDITS_OF_CUSTOMER = (
    _CREDITS_OF_PAYMENTS.split(" FROM customer_credits c WHERE")[0]
    + " FROM customer_credits c WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at, credit_id"
)


async def credits_of_customer(conn: Conn, tenant_id: str, customer_id: str) -> list[dict]:
    """Every credit of the customer, oldest first, with its applications."""
    return [_with_applications(r) for r in await conn.fetch(_CREDITS_OF_CUSTOMER, tenant_id, customer_id)]


_CUSTOMERS_WITH_CREDIT = (
    "SELECT DISTINCT k.tenant_id, k.customer_id FROM jsonb_to_recordset($1::text::jsonb)"
    " AS k(tenant_id text, customer_id text)"
    " JOIN customer_credits c ON c.tenant_id = k.tenant_id AND c.customer_id = k.customer_id AND c.remaining > 0"
)


async def customers_with_credit(conn: asyncpg.Connection, keys: list[dict[str, str]]) -> set[tuple[str, str]]:
    """Of the (tenant_id, customer_id) pairs named, those holding credit (the batch's one query)."""
    rows = await conn.fetch(_CUSTOMERS_WITH_CREDIT, orjson.dumps(keys).decode())
    return {(r["tenant_id"], r["customer_id"]) for r in rows}


_CUSTOMERS_OF_PAYMENT = (
    "SELECT customer_id FROM customer_credits WHERE source_payment_id = $1"
    " UNION SELECT i.customer_id FROM allocations a JOIN invoices i USING (invoice_id)"
    " WHERE a.payment_id = $1 AND i.customer_id IS NOT NULL"
)


async def customers_of_payment(conn: asyncpg.Connection, payment_id: str) -> list[str]:
    """The customers whose credit or invoices the payment's money reached (their credit locks)."""
    return sorted(r["customer_id"] for r in await conn.fetch(_CUSTOMERS_OF_PAYMENT, payment_id))
