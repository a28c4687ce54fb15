"""The late fees and interest claimed on an invoice (invoice_charges): the totals of its latest
LateChargesAssessed and its LateChargesWaived, in any order. A charge never touches amount_due or
balance; the invoice view shows the row as `charges`."""

from datetime import datetime
from decimal import Decimal

import asyncpg

# The totals of the latest assessment win (a later assessment's totals include the earlier ones);
# an older assessment delivered late changes nothing.
_ASSESSED = """
INSERT INTO invoice_charges AS c (invoice_id, tenant_id, currency, late_fees, interest, last_assessed_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (invoice_id) DO UPDATE SET
    late_fees = CASE WHEN c.last_assessed_at IS NULL OR EXCLUDED.last_assessed_at >= c.last_assessed_at
                     THEN EXCLUDED.late_fees ELSE c.late_fees END,
    interest = CASE WHEN c.last_assessed_at IS NULL OR EXCLUDED.last_assessed_at >= c.last_assessed_at
                    THEN EXCLUDED.interest ELSE c.interest END,
    last_assessed_at = greatest(c.last_assessed_at, EXCLUDED.last_assessed_at)
"""


async def record_assessed(
    conn: asyncpg.Connection,
    tenant_id: str,
    invoice_id: str,
    currency: str,
    total_late_fees: Decimal,
    total_interest: Decimal,
    assessed_at: datetime,
) -> None:
    await conn.execute(_ASSESSED, invoice_id, tenant_id, currency, total_late_fees, total_interest, assessed_at)


# The latest waiver stands (a waiver withdraws everything claimed until then).
_WAIVED = """
INSERT INTO invoice_charges AS c (invoice_id, tenant_id, currency, waived_late_fees, waived_interest, waived_at,
                                  waived_by, waived_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (invoice_id) DO UPDATE SET
    waived_late_fees = EXCLUDED.waived_late_fees, waived_interest = EXCLUDED.waived_interest,
    waived_at = EXCLUDED.waived_at, waived_by = EXCLUDED.waived_by, waived_reason = EXCLUDED.waived_reason
WHERE c.waived_at IS NULL OR EXCLUDED.waived_at >= c.waived_at
"""


async def record_waived(
    conn: asyncpg.Connection,
    tenant_id: str,
    invoice_id: str,
    currency: str,
    late_fees: Decimal,
    interest: Decimal,
    waived_at: datetime,
    waived_by: str,
    reason: str,
) -> None:
    await conn.execute(_WAIVED, invoice_id, tenant_id, currency, late_fees, interest, waived_at, waived_by, reason)
