"""Holds (dunning blocks): placing one, releasing it, and the reads of the API, the invoice timeline
and the customer. A hold's status is derived from its row and the clock, in SQL (`_STATUS`), so the
list filter and the answer agree: released (released_at set), expired (ends_at passed), active."""

from datetime import datetime
from typing import Any

import asyncpg

_STATUS = (
    "CASE WHEN h.released_at IS NOT NULL THEN 'released'"
    " WHEN h.ends_at <= clock_timestamp() THEN 'expired' ELSE 'active' END"
)
HOLD_SELECT = f"SELECT h.*, {_STATUS} AS status FROM holds AS h"
_ACTIVE = "h.released_at IS NULL AND (h.ends_at IS NULL OR h.ends_at > clock_timestamp())"

_INSERT = """
INSERT INTO holds (hold_id, tenant_id, customer_id, invoice_id, reason, placed_by, ends_at, acknowledged_at, event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


async def insert_hold(conn: asyncpg.Connection, hold: dict[str, Any]) -> None:
    """hold: hold_id, tenant_id, customer_id, invoice_id (None: the customer's), reason, placed_by,
    ends_at, acknowledged_at, event_id (its HoldPlaced)."""
    await conn.execute(
        _INSERT,
        *(
            hold[k]
            for k in (
                "hold_id",
                "tenant_id",
                "customer_id",
                "invoice_id",
                "reason",
                "placed_by",
                "ends_at",
                "acknowledged_at",
                "event_id",
            )
        ),
    )


async def get_hold(conn: asyncpg.Connection, tenant_id: str, hold_id: str, *, lock: bool = False) -> Any:
    sql = HOLD_SELECT + " WHERE h.tenant_id = $1 AND h.hold_id = $2" + (" FOR UPDATE" if lock else "")
    return await conn.fetchrow(sql, tenant_id, hold_id)


_RELEASE = """
UPDATE holds SET released_at = $3, released_by = $4
 WHERE tenant_id = $1 AND hold_id = $2 AND released_at IS NULL
"""


async def release_hold(
    conn: asyncpg.Connection, tenant_id: str, hold_id: str, released_at: datetime, released_by: str
) -> None:
    await conn.execute(_RELEASE, tenant_id, hold_id, released_at, released_by)


async def list_holds(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    status: str | None,
    invoice_id: str | None,
    customer_id: str | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first (ids are time-ordered); `after` is the last id of the previous page. `invoice_id`:
    the holds covering that invoice (its own and its customer's)."""
    where: list[str] = ["h.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    for clause, value in (
        ("h.customer_id = ${}", customer_id),
        (
            "(h.invoice_id = ${0} OR (h.invoice_id IS NULL AND h.customer_id ="
            " (SELECT customer_id FROM invoices WHERE id = ${0})))",
            invoice_id,
        ),
        ("h.hold_id < ${}", after),
        (f"({_STATUS}) = ${{}}", status),
    ):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    args.append(limit)
    sql = f"{HOLD_SELECT} WHERE {' AND '.join(where)} ORDER BY h.hold_id DESC LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


_COVERING = HOLD_SELECT + " WHERE h.invoice_id = $1 OR (h.invoice_id IS NULL AND h.customer_id = $2) ORDER BY h.hold_id"


async def holds_covering(conn: asyncpg.Connection, invoice_id: str, customer_id: str) -> list[asyncpg.Record]:
    """Every hold on the invoice or on its whole customer, oldest first (the invoice's timeline)."""
    return await conn.fetch(_COVERING, invoice_id, customer_id)


_ACTIVE_OF_CUSTOMER = HOLD_SELECT + f" WHERE h.tenant_id = $1 AND h.customer_id = $2 AND {_ACTIVE} ORDER BY h.hold_id"


async def active_holds_of_customer(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> list[asyncpg.Record]:
    """The customer's active holds: on the customer and on any of its invoices, oldest first."""
    return await conn.fetch(_ACTIVE_OF_CUSTOMER, tenant_id, customer_id)
