"""Payments as PaymentReceived reports them, and the balance they leave on the invoice."""

from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning.contracts import PaymentReceived

_RECORD_PAYMENT = """
INSERT INTO payments (payment_id, invoice_id, tenant_id, source, source_reference, currency, amount,
                      amount_applied, balance_remaining, settled, received_at, acknowledged_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (payment_id) DO NOTHING RETURNING true
"""


async def record_payment(conn: asyncpg.Connection, p: PaymentReceived, amounts: dict[str, Decimal]) -> bool:
    """Insert the payment (idempotent by payment_id), `amounts` quantized; True if it is new."""
    return bool(
        await conn.fetchval(
            _RECORD_PAYMENT,
            p.payment_id,
            p.invoice_id,
            p.tenant_id,
            p.source,
            p.source_reference,
            p.currency,
            amounts["amount"],
            amounts["amount_applied"],
            amounts["balance_remaining"],
            p.settled,
            p.received_at,
            p.acknowledged_at,
        )
    )


_APPLY_BALANCE = """
UPDATE invoices
   SET balance = $2,
       status = CASE WHEN status = 'void' THEN 'void' WHEN $3 THEN 'paid' ELSE 'open' END,
       balance_as_of = $4, balance_payment_id = $5
 WHERE id = $1 AND (balance_as_of IS NULL OR (balance_as_of, balance_payment_id) < ($4, $5))
"""


async def apply_balance(
    conn: asyncpg.Connection, invoice_id: str, balance: Decimal, settled: bool, as_of: datetime, payment_id: str
) -> bool:
    """Set balance and status from this payment unless a later-acknowledged payment already did."""
    result = await conn.execute(_APPLY_BALANCE, invoice_id, balance, settled, as_of, payment_id)
    return result.endswith(" 1")
