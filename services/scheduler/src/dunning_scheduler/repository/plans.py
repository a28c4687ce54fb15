"""SQL of payment plans: the plans themselves and their instalment reminders. Every function runs
on the caller's connection and transaction."""

from datetime import datetime
from decimal import Decimal

import asyncpg

_INSERT_PLAN = """
INSERT INTO payment_plans (plan_id, tenant_id, customer_id, currency, total, invoices, instalments,
                           first_invoice_id, acknowledged_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)
ON CONFLICT (plan_id) DO NOTHING
RETURNING plan_id
"""


async def insert_plan(
    conn: asyncpg.Connection,
    *,
    plan_id: str,
    tenant_id: str,
    customer_id: str,
    currency: str,
    total: Decimal,
    invoices: list[dict],
    instalments: list[dict],
    acknowledged_at: datetime,
) -> bool:
    return (
        await conn.fetchval(
            _INSERT_PLAN,
            plan_id,
            tenant_id,
            customer_id,
            currency,
            total,
            invoices,
            instalments,
            invoices[0]["invoice_id"],
            acknowledged_at,
        )
        is not None
    )


# A plan locked, with its invoices' balances now (an invoice the scheduler does not know yet: its
# balance as agreed).
_LOCK_PLAN = """
SELECT pl.*, (SELECT coalesce(jsonb_agg(coalesce(i.balance, (x->>'balance')::numeric)
                                       ORDER BY ord), '[]'::jsonb)
              FROM jsonb_array_elements(pl.invoices) WITH ORDINALITY AS e(x, ord)
              LEFT JOIN invoices AS i ON i.invoice_id = x->>'invoice_id') AS balances_now,
       (SELECT i.customer->>'timezone' FROM invoices AS i WHERE i.invoice_id = pl.first_invoice_id) AS timezone
FROM payment_plans AS pl WHERE pl.plan_id = $1
FOR UPDATE OF pl
"""


async def lock_plan(conn: asyncpg.Connection, plan_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK_PLAN, plan_id)


_ACTIVE_PLANS_OF = (
    "SELECT plan_id FROM payment_plans WHERE status = 'active'"
    " AND invoices @> jsonb_build_array(jsonb_build_object('invoice_id', $1::text)) ORDER BY plan_id"
)


async def active_plans_of(conn: asyncpg.Connection, invoice_id: str) -> list[str]:
    return [r["plan_id"] for r in await conn.fetch(_ACTIVE_PLANS_OF, invoice_id)]


async def finish_plan(conn: asyncpg.Connection, plan_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE payment_plans SET status = $2, finished_at = now() WHERE plan_id = $1 AND status = 'active'",
        plan_id,
        status,
    )


# A plan's instalment reminders still to come (scheduled or paused), those of `numbers` (empty:
# all), cancelled with `reason`.
_CANCEL_INSTALMENTS = """
UPDATE timers SET state = 'cancelled', cancelled_at = now(), reason = $4
WHERE invoice_id = $1 AND kind = 'instalment' AND state IN ('scheduled', 'paused') AND context->>'plan_id' = $2
  AND (cardinality($3::int[]) = 0 OR (context->>'number')::int = ANY($3::int[]))
RETURNING stage_id, stage, sequence, channel, scheduled_at
"""


async def cancel_instalments(
    conn: asyncpg.Connection, invoice_id: str, plan_id: str, numbers: list[int], reason: str
) -> list[asyncpg.Record]:
    return await conn.fetch(_CANCEL_INSTALMENTS, invoice_id, plan_id, numbers, reason)
