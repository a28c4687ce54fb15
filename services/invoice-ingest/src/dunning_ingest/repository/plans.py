"""Payment plans: the customer and invoices a plan is agreed on (read under lock), the plan with its
invoices and instalments (one statement), the API's reads (each plan with its invoices' balances
now), and the end of a plan (completed, broken, cancelled) with the scheduler's missed instalment."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

_CUSTOMER = "SELECT id, external_id, timezone FROM customers WHERE tenant_id = $1 AND id = $2"


async def customer(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_CUSTOMER, tenant_id, customer_id)


_ACTIVE_PLANS = "SELECT invoice_id, plan_id FROM payment_plan_invoices WHERE active AND invoice_id = ANY($1::text[])"


async def active_plans(conn: asyncpg.Connection, invoice_ids: Sequence[str]) -> dict[str, str]:
    """invoice id -> the active plan it is in, for those of `invoice_ids` that are in one."""
    rows = await conn.fetch(_ACTIVE_PLANS, list(invoice_ids))
    return {r["invoice_id"]: r["plan_id"] for r in rows}


_INSERT_PLAN = """
WITH plan AS (
    INSERT INTO payment_plans (id, tenant_id, customer_id, currency, total, agreed_by, acknowledged_at, event_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id
), covered AS (
    INSERT INTO payment_plan_invoices (plan_id, invoice_id, position, balance)
    SELECT plan.id, u.invoice_id, u.position, u.balance
      FROM plan, json_to_recordset($9::text::json) AS u(invoice_id text, position int, balance numeric)
)
INSERT INTO payment_plan_instalments (plan_id, number, due_date, amount)
SELECT plan.id, u.number, u.due_date, u.amount
  FROM plan, json_to_recordset($10::text::json) AS u(number int, due_date date, amount numeric)
"""


async def insert_plan(
    conn: asyncpg.Connection,
    *,
    plan_id: str,
    tenant_id: str,
    customer_id: str,
    currency: str,
    total: Any,
    agreed_by: str,
    acknowledged_at: datetime,
    event_id: str,
    invoices: str,
    instalments: str,
) -> None:
    """One statement: the plan, its invoices (`invoices`: JSON [{invoice_id, position, balance}]) and its
    instalments (JSON [{number, due_date, amount}])."""
    await conn.execute(
        _INSERT_PLAN,
        plan_id,
        tenant_id,
        customer_id,
        currency,
        total,
        agreed_by,
        acknowledged_at,
        event_id,
        invoices,
        instalments,
    )


# A plan as the API shows it: amounts as text (exact), its invoices with their balance now.
_PLAN_SELECT = """
SELECT p.id, p.tenant_id, p.customer_id, c.external_id AS customer_external_id, c.timezone AS customer_timezone,
       p.currency, p.total, p.status, p.agreed_by, p.acknowledged_at, p.missed_instalment, p.missed_at,
       p.ended_at, p.ended_by, p.end_reason,
       (SELECT json_agg(json_build_object('number', n.number, 'due_date', n.due_date, 'amount', n.amount::text)
                        ORDER BY n.number)
          FROM payment_plan_instalments n WHERE n.plan_id = p.id) AS instalments,
       (SELECT json_agg(json_build_object('invoice_id', pi.invoice_id, 'external_id', i.external_id,
                                          'balance', pi.balance::text, 'current_balance', i.balance::text,
                                          'invoice_status', i.status)
                        ORDER BY pi.position)
          FROM payment_plan_invoices pi JOIN invoices i ON i.id = pi.invoice_id WHERE pi.plan_id = p.id) AS invoices
  FROM payment_plans p JOIN customers c ON c.id = p.customer_id
"""
_GET_PLAN = _PLAN_SELECT + " WHERE p.tenant_id = $1 AND p.id = $2"


async def get_plan(conn: asyncpg.Connection, tenant_id: str, plan_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_PLAN, tenant_id, plan_id)


async def list_plans(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    customer_id: str | None,
    status: str | None,
    after_id: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first (ids are time-ordered); `after_id` is the last id of the previous page."""
    where: list[str] = ["p.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    for clause, value in (("p.customer_id = ${}", customer_id), ("p.status = ${}", status), ("p.id < ${}", after_id)):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    args.append(limit)
    sql = f"{_PLAN_SELECT} WHERE {' AND '.join(where)} ORDER BY p.id DESC LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


_PLANS_OF_INVOICE = _PLAN_SELECT + (
    " WHERE p.id IN (SELECT plan_id FROM payment_plan_invoices WHERE invoice_id = $1) ORDER BY p.id"
)


async def plans_of_invoice(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    """Every plan that covers the invoice, oldest first (for its detail and timeline)."""
    return await conn.fetch(_PLANS_OF_INVOICE, invoice_id)


_LOCK_PLAN = (
    "SELECT id, tenant_id, customer_id, status, acknowledged_at,"
    " ARRAY(SELECT invoice_id FROM payment_plan_invoices WHERE plan_id = p.id ORDER BY position) AS invoice_ids"
    " FROM payment_plans p WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
)


async def lock_plan(conn: asyncpg.Connection, tenant_id: str, plan_id: str) -> asyncpg.Record | None:
    """(id, tenant_id, customer_id, status, acknowledged_at, invoice_ids), locked until the transaction ends."""
    return await conn.fetchrow(_LOCK_PLAN, tenant_id, plan_id)


# An active plan ends once: completed, broken or cancelled; its invoices may then join another plan.
_END_PLAN = """
WITH ended AS (
    UPDATE payment_plans SET status = $3, ended_at = $4, ended_by = $5, end_reason = $6
     WHERE tenant_id = $1 AND id = $2 AND status = 'active'
    RETURNING id
), released AS (
    UPDATE payment_plan_invoices SET active = false WHERE plan_id IN (SELECT id FROM ended) AND active
    RETURNING 1
)
SELECT count(*) > 0 FROM ended
"""


async def end_plan(
    conn: asyncpg.Connection,
    tenant_id: str,
    plan_id: str,
    status: str,
    at: datetime,
    *,
    by: str | None = None,
    reason: str | None = None,
) -> bool:
    """Set an active plan's final status (completed | broken | cancelled); False if it was not active."""
    return bool(await conn.fetchval(_END_PLAN, tenant_id, plan_id, status, at, by, reason))


_RECORD_MISSED = """
UPDATE payment_plans SET missed_instalment = $3, missed_at = $4
 WHERE tenant_id = $1 AND id = $2 AND missed_instalment IS NULL
RETURNING id
"""


async def record_missed(conn: asyncpg.Connection, tenant_id: str, plan_id: str, number: int, at: datetime) -> bool:
    """Remember the instalment the scheduler judged missed (the first one it names); False if the
    plan is unknown or one is already recorded."""
    return await conn.fetchval(_RECORD_MISSED, tenant_id, plan_id, number, at) is not None


_PLAN_EXISTS = "SELECT tenant_id FROM payment_plans WHERE id = $1"


async def plan_tenant(conn: asyncpg.Connection, plan_id: str) -> str | None:
    """The tenant of a plan, or None if there is no such plan."""
    return await conn.fetchval(_PLAN_EXISTS, plan_id)
