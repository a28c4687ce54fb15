"""SQL for call tasks and the collections routes' Idempotency-Key (tasks.py, agency.py)."""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

TASK_COLUMNS = (
    "task_id, tenant_id, invoice_id, customer_id, stage, stage_id, delivery_id, follow_up_of, due_at, state,"
    " assignee, currency, balance, customer_timezone, phone, outcome, promised_amount, promised_date,"
    " dispute_reason, callback_at, note, completed_by, completed_at, cancel_reason, cancelled_at,"
    " created_at, updated_at"
)

# A retried send of the same call delivery finds the task it made (delivery_id unique): `created` false.
_INSERT_FOR_DELIVERY = f"""
WITH new AS (
    INSERT INTO tasks (task_id, tenant_id, invoice_id, customer_id, stage, stage_id, delivery_id, due_at,
                       currency, balance, customer_timezone, phone)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING {TASK_COLUMNS}, true AS created
)
SELECT * FROM new
UNION ALL
SELECT {TASK_COLUMNS}, false AS created FROM tasks WHERE delivery_id = $7 AND NOT EXISTS (SELECT 1 FROM new)
"""


async def insert_for_delivery(conn: asyncpg.Connection, **task: Any) -> asyncpg.Record:
    """The call stage's task: made now (`created`), or the one an earlier attempt of the delivery made."""
    return await conn.fetchrow(
        _INSERT_FOR_DELIVERY,
        task["task_id"],
        task["tenant_id"],
        task["invoice_id"],
        task["customer_id"],
        task["stage"],
        task["stage_id"],
        task["delivery_id"],
        task["due_at"],
        task["currency"],
        task["balance"],
        task["customer_timezone"],
        task["phone"],
    )


_INSERT_FOLLOW_UP = f"""
INSERT INTO tasks (task_id, tenant_id, invoice_id, customer_id, stage, follow_up_of, due_at, currency, balance,
                   customer_timezone, phone)
SELECT $1, t.tenant_id, t.invoice_id, t.customer_id, t.stage, t.task_id, $3, t.currency, t.balance,
       t.customer_timezone, t.phone
  FROM tasks t WHERE t.task_id = $2
ON CONFLICT (follow_up_of) DO NOTHING
RETURNING {TASK_COLUMNS}
"""


async def insert_follow_up(
    conn: asyncpg.Connection, task_id: str, of_task: str, due_at: datetime
) -> asyncpg.Record | None:
    """A callback's follow-up of `of_task` (None: it has one already)."""
    return await conn.fetchrow(_INSERT_FOLLOW_UP, task_id, of_task, due_at)


_LIST = f"""
SELECT {TASK_COLUMNS} FROM tasks WHERE tenant_id = $1
   AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR assignee = $3)
   AND ($4::text IS NULL OR customer_id = $4) AND ($5::text IS NULL OR invoice_id = $5)
   AND ($6::text IS NULL OR task_id < $6)
 ORDER BY task_id DESC LIMIT $7
"""


async def list_tasks(
    db: Executor,
    tenant_id: str,
    *,
    state: str | None,
    assignee: str | None,
    customer_id: str | None,
    invoice_id: str | None,
    before: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A tenant's tasks, newest first (task ids are time-ordered: `before` pages back)."""
    return await db.fetch(_LIST, tenant_id, state, assignee, customer_id, invoice_id, before, limit)


_GET = f"SELECT {TASK_COLUMNS} FROM tasks WHERE tenant_id = $1 AND task_id = $2"


async def get_task(db: Executor, tenant_id: str, task_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(_GET + (" FOR UPDATE" if lock else ""), tenant_id, task_id)


_ASSIGN = f"""
UPDATE tasks SET assignee = $3, state = 'assigned', updated_at = now()
 WHERE tenant_id = $1 AND task_id = $2 AND state IN ('open', 'assigned')
RETURNING {TASK_COLUMNS}
"""


async def assign(conn: asyncpg.Connection, tenant_id: str, task_id: str, assignee: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_ASSIGN, tenant_id, task_id, assignee)


_COMPLETE = f"""
UPDATE tasks SET state = 'completed', outcome = $3, promised_amount = $4, promised_date = $5, dispute_reason = $6,
       callback_at = $7, note = $8, completed_by = $9, completed_at = $10, updated_at = now()
 WHERE tenant_id = $1 AND task_id = $2 AND state IN ('open', 'assigned')
RETURNING {TASK_COLUMNS}
"""


async def complete(
    conn: asyncpg.Connection,
    tenant_id: str,
    task_id: str,
    *,
    outcome: str,
    promised_amount: Decimal | None,
    promised_date: date | None,
    dispute_reason: str | None,
    callback_at: datetime | None,
    note: str | None,
    completed_by: str,
    completed_at: datetime,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        _COMPLETE,
        tenant_id,
        task_id,
        outcome,
        promised_amount,
        promised_date,
        dispute_reason,
        callback_at,
        note,
        completed_by,
        completed_at,
    )


_CANCEL_OPEN = f"""
UPDATE tasks SET state = 'cancelled', cancel_reason = $3, cancelled_at = $4, updated_at = now()
 WHERE tenant_id = $1 AND invoice_id = $2 AND state IN ('open', 'assigned')
RETURNING {TASK_COLUMNS}
"""


async def cancel_open(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, reason: str, at: datetime
) -> list[asyncpg.Record]:
    """A stop of the invoice: its open and assigned tasks cancelled (the rows)."""
    return await conn.fetch(_CANCEL_OPEN, tenant_id, invoice_id, reason, at)


_TASKS_OF_INVOICE = f"SELECT {TASK_COLUMNS} FROM tasks WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY task_id"


async def tasks_of_invoice(db: Executor, tenant_id: str, invoice_id: str) -> list[asyncpg.Record]:
    return await db.fetch(_TASKS_OF_INVOICE, tenant_id, invoice_id)


# --- Idempotency-Key ---------------------------------------------------------------------------------

_REPLAY = "SELECT fingerprint, status, body FROM collections_idempotency WHERE tenant_id = $1 AND key = $2"
_REMEMBER = (
    "INSERT INTO collections_idempotency (tenant_id, key, fingerprint, status, body) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (tenant_id, key) DO NOTHING"
)


async def replay(conn: asyncpg.Connection, tenant_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_REPLAY, tenant_id, key)


async def remember(
    conn: asyncpg.Connection, tenant_id: str, key: str, fingerprint: str, status: int, body: Any
) -> None:
    await conn.execute(_REMEMBER, tenant_id, key, fingerprint, status, body)
