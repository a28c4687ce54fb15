"""SQL of the hand-off to a collection agency (collections_handlers.py)."""

from datetime import datetime

import asyncpg

_HANDED_TO_AGENCY = """
UPDATE invoices SET with_agency_at = $3, agency_case_id = $4, agency_name = $5
 WHERE id = $1 AND tenant_id = $2 AND with_agency_at IS NULL
RETURNING id, status
"""


async def mark_with_agency(
    conn: asyncpg.Connection, invoice_id: str, tenant_id: str, at: datetime, case_id: str, agency_name: str
) -> asyncpg.Record | None:
    """The invoice marked as handed over (None: unknown, another tenant's, or marked before)."""
    return await conn.fetchrow(_HANDED_TO_AGENCY, invoice_id, tenant_id, at, case_id, agency_name)
