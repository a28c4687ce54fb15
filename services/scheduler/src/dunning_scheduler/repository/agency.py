"""SQL of the agency stop (agency_stop.py): an invoice handed to a collection agency."""

from datetime import datetime

import asyncpg

from dunning_scheduler.repository.invoices import run_stop, stop_statement

# The first hand-off of an open, unsettled invoice stops it (`newly`: StagesCancelled even with nothing
# left); a second one, or one of an invoice settled or closed meanwhile, only records nothing new.
_HAND_TO_AGENCY = stop_statement(
    """
    UPDATE invoices AS i SET with_agency_at = $3, updated_at = now()
    WHERE i.invoice_id = $1 AND i.tenant_id = $2 AND i.with_agency_at IS NULL
    RETURNING i.settled, i.balance, i.planned_at, (i.status = 'open' AND NOT i.settled) AS stop,
              (i.status = 'open' AND NOT i.settled) AS newly""",
    "$4",
)


async def hand_to_agency(
    conn: asyncpg.Connection, *, invoice_id: str, tenant_id: str, handed_over_at: datetime, reason: str
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Mark the invoice with the agency and cancel its pending timers (`reason`), in one statement under
    the invoice's row lock (repository.stop_statement). None: unknown, another tenant's, or marked before."""
    return await run_stop(conn, _HAND_TO_AGENCY, invoice_id, tenant_id, handed_over_at, reason)
