"""SQL of charges: reference rates, the charges assessed per (invoice, stage), waivers, and the money
ledger interest reads. Every function runs on the caller's connection and transaction."""

from datetime import date, datetime
from decimal import Decimal

import asyncpg

# A tenant's view of a reference: the shared periods ('') and its own, its own winning on the same day.
_RATES = """
SELECT DISTINCT ON (valid_from) valid_from, rate, tenant_id <> '' AS own, changed_by, created_at
FROM reference_rates WHERE name = $2 AND tenant_id IN ('', $1)
ORDER BY valid_from, (tenant_id <> '') DESC
"""


async def rates(conn: asyncpg.Connection, tenant_id: str, name: str) -> list[asyncpg.Record]:
    """The reference's periods as the tenant sees them, oldest first (none: unknown name)."""
    return await conn.fetch(_RATES, tenant_id, name)


_NAMES = """
SELECT name, count(DISTINCT valid_from) AS periods, max(valid_from) AS latest_from, bool_or(tenant_id <> '') AS own
FROM reference_rates WHERE tenant_id IN ('', $1) GROUP BY name ORDER BY name
"""


async def rate_names(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_NAMES, tenant_id)


_PUT_RATES = """
INSERT INTO reference_rates (tenant_id, name, valid_from, rate, changed_by)
SELECT $1, $2, p.valid_from, p.rate, $5 FROM unnest($3::date[], $4::numeric[]) AS p(valid_from, rate)
ON CONFLICT (tenant_id, name, valid_from) DO UPDATE SET rate = excluded.rate, changed_by = excluded.changed_by,
    created_at = now()
WHERE reference_rates.rate <> excluded.rate
"""


async def put_rates(
    conn: asyncpg.Connection, tenant_id: str, name: str, periods: list[tuple[date, Decimal]], changed_by: str
) -> None:
    """Add or change the tenant's own periods of `name` (a period equal to the stored one is kept)."""
    await conn.execute(_PUT_RATES, tenant_id, name, [p[0] for p in periods], [p[1] for p in periods], changed_by)


_LEDGER = "SELECT acknowledged_at, amount FROM money_applied WHERE invoice_id = $1 ORDER BY acknowledged_at"


async def money_applied(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_LEDGER, invoice_id)


_CHARGED = """
SELECT stage, stage_id, late_fee, interest, interest_to, total_late_fees, total_interest, assessed_at
FROM invoice_charges WHERE invoice_id = $1 ORDER BY assessed_at, stage
"""


async def charged(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    """The invoice's assessments, oldest first (the last one carries the totals)."""
    return await conn.fetch(_CHARGED, invoice_id)


_ADD_CHARGE = """
INSERT INTO invoice_charges (invoice_id, stage, stage_id, tenant_id, currency, late_fee, interest, interest_to,
                             total_late_fees, total_interest, assessed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (invoice_id, stage) DO NOTHING
RETURNING invoice_id
"""


async def add_charge(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    stage: str,
    stage_id: str,
    tenant_id: str,
    currency: str,
    late_fee: Decimal,
    interest: Decimal,
    interest_to: date | None,
    total_late_fees: Decimal,
    total_interest: Decimal,
    assessed_at: datetime,
) -> bool:
    """Record an assessment; False when the (invoice, stage) was assessed already."""
    return (
        await conn.fetchval(
            _ADD_CHARGE,
            invoice_id,
            stage,
            stage_id,
            tenant_id,
            currency,
            late_fee,
            interest,
            interest_to,
            total_late_fees,
            total_interest,
            assessed_at,
        )  # fmt: skip
        is not None
    )


_WAIVER = "SELECT * FROM charge_waivers WHERE invoice_id = $1"


async def waiver(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_WAIVER, invoice_id)


_WAIVED = "SELECT invoice_id FROM charge_waivers WHERE invoice_id = ANY($1::text[])"


async def waived(conn: asyncpg.Connection, invoice_ids: list[str]) -> set[str]:
    return {r["invoice_id"] for r in await conn.fetch(_WAIVED, invoice_ids)}


_ADD_WAIVER = """
INSERT INTO charge_waivers (invoice_id, tenant_id, currency, late_fees, interest, reason, waived_by, waived_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (invoice_id) DO NOTHING
RETURNING *
"""


async def add_waiver(
    conn: asyncpg.Connection,
    invoice_id: str,
    tenant_id: str,
    currency: str,
    late_fees: Decimal,
    interest: Decimal,
    reason: str,
    waived_by: str,
    waived_at: datetime,
) -> asyncpg.Record | None:
    """The new waiver, or None when the invoice's charges were waived already."""
    return await conn.fetchrow(
        _ADD_WAIVER, invoice_id, tenant_id, currency, late_fees, interest, reason, waived_by, waived_at
    )


_LOCK_INVOICE = "SELECT invoice_id FROM invoices WHERE invoice_id = $1 AND tenant_id = $2 FOR UPDATE"


async def lock_invoice(conn: asyncpg.Connection, invoice_id: str, tenant_id: str) -> bool:
    """Lock the invoice row (a waiver and an assessment of it take turns); False: no such invoice."""
    return await conn.fetchval(_LOCK_INVOICE, invoice_id, tenant_id) is not None


_INVOICE = """
SELECT invoice_id, tenant_id, customer_id, currency, amount_due, balance, due_date, customer, policy_key,
       policy_version, policy_is_default, status, settled
FROM invoices WHERE invoice_id = $1 AND tenant_id = $2
"""


async def invoice(conn: asyncpg.Connection, invoice_id: str, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE, invoice_id, tenant_id)


_POLICY_DOCUMENT = "SELECT document FROM policies WHERE tenant_id = $1 AND policy_key = $2 AND version = $3"


async def policy_document(conn: asyncpg.Connection, tenant_id: str, policy_key: str, version: int) -> dict | None:
    return await conn.fetchval(_POLICY_DOCUMENT, tenant_id, policy_key, version)
