"""SQL of a customer's payment history, as segment rules read it: over each customer's last `n`
settled invoices, how many there are and the average days late (max(0, settled date - due date),
the settled date in UTC). One statement for a batch of customers (index invoices_settled_by_customer)."""

import asyncpg

_HISTORY = """
SELECT c.customer_id, count(h.due_date) AS settled_invoices, avg(h.days_late)::numeric(12, 2) AS average_days_late,
       coalesce(array_agg(h.days_late ORDER BY h.settled_at DESC) FILTER (WHERE h.due_date IS NOT NULL), '{}')
           AS days_late
FROM unnest($2::text[]) AS c(customer_id)
LEFT JOIN LATERAL (
    SELECT i.due_date, i.settled_at, greatest(0, (i.settled_at AT TIME ZONE 'UTC')::date - i.due_date) AS days_late
    FROM invoices AS i
    WHERE i.tenant_id = $1 AND i.customer_id = c.customer_id AND i.settled AND i.due_date IS NOT NULL
      AND i.planned_at IS NOT NULL
    ORDER BY i.settled_at DESC
    LIMIT $3
) AS h ON true
GROUP BY c.customer_id
"""


async def payment_history(
    conn: asyncpg.Connection, tenant_id: str, customer_ids: list[str], n: int
) -> list[asyncpg.Record]:
    """customer_id, settled_invoices, average_days_late (None: none settled) and days_late (each
    invoice's, most recent first) of each customer given."""
    return await conn.fetch(_HISTORY, tenant_id, customer_ids, n)
