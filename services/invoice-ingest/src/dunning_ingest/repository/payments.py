"""Payments and credit notes as PaymentReceived and CreditNoteIssued report them, and the balance
they leave on the invoice: its amount due minus everything applied, whatever order they arrive in.
A PaymentReceived is one allocation of a payment (issue 11): a row per allocation (`entry_id`, the
allocation id; the payment id for an event from before allocations). The other changes of a
balance (reversals, unallocations, customer credit) are repository.money's money_entries."""

from decimal import Decimal

import asyncpg

from dunning.contracts import CreditNoteIssued, PaymentReceived

_RECORD_PAYMENT = """
INSERT INTO payments (payment_id, invoice_id, tenant_id, source, source_reference, currency, amount,
                      amount_applied, balance_remaining, settled, received_at, acknowledged_at,
                      allocation_id, match_rule, match_reason, balance_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (entry_id) DO NOTHING RETURNING true
"""


async def record_payment(conn: asyncpg.Connection, p: PaymentReceived, amounts: dict[str, Decimal]) -> bool:
    """Insert the payment's allocation (idempotent by allocation_id, else payment_id), `amounts`
    quantized; True if it is new."""
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
            p.allocation_id,
            p.match_rule,
            p.match_reason,
            p.balance_version,
        )
    )


_RECORD_CREDIT_NOTE = """
INSERT INTO credit_notes (credit_note_id, invoice_id, tenant_id, reference, reason, currency, amount,
                          amount_applied, balance_remaining, settled, acknowledged_at, balance_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (credit_note_id) DO NOTHING RETURNING true
"""


async def record_credit_note(conn: asyncpg.Connection, c: CreditNoteIssued, amounts: dict[str, Decimal]) -> bool:
    """Insert the credit note (idempotent by credit_note_id), `amounts` quantized; True if it is new."""
    return bool(
        await conn.fetchval(
            _RECORD_CREDIT_NOTE,
            c.credit_note_id,
            c.invoice_id,
            c.tenant_id,
            c.reference,
            c.reason,
            c.currency,
            amounts["amount"],
            amounts["amount_applied"],
            amounts["balance_remaining"],
            c.settled,
            c.acknowledged_at,
            c.balance_version,
        )
    )


# The balance rule, written once: the amount due minus what payments, credit notes and customer
# credit applied, plus what reversals and unallocations took back (money_entries.applied is signed):
# a sum converges in any order, and an amount correction moves it by the difference. An open invoice
# whose balance reaches zero is paid; a paid one whose balance rises above zero is open again
# (reopened). Closed ones (void, written off) keep their status.
_APPLIED = (
    "(SELECT coalesce(sum(amount_applied), 0) FROM payments WHERE invoice_id = i.id)"
    " + (SELECT coalesce(sum(amount_applied), 0) FROM credit_notes WHERE invoice_id = i.id)"
    " + (SELECT coalesce(sum(applied), 0) FROM money_entries WHERE invoice_id = i.id)"
)


def balance_and_status(amount_due: str = "i.amount_due") -> str:
    """The SET clause of an UPDATE of `invoices AS i` that applies the balance rule to `amount_due`
    (an SQL expression: the stored amount, or a corrected one)."""
    balance = f"{amount_due} - ({_APPLIED})"
    status = (
        f"CASE WHEN i.status = 'open' AND {balance} <= 0 THEN 'paid'"
        f" WHEN i.status = 'paid' AND {balance} > 0 THEN 'open' ELSE i.status END"
    )
    return f"balance = {balance}, status = {status}"


# The status before is read under the row lock (FOR UPDATE in the CTE), so `was` is the status this
# change moved from: a paid invoice that comes back open is a reopening.
_APPLY_BALANCE = f"""
WITH was AS (SELECT id, status FROM invoices WHERE id = $1 FOR UPDATE)
UPDATE invoices AS i SET {balance_and_status()} FROM was WHERE i.id = was.id
RETURNING i.balance, i.status, was.status AS was
"""


async def apply_balance(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record:
    """Recompute the invoice's balance and status from everything applied to it: (balance, status,
    was: the status before)."""
    return await conn.fetchrow(_APPLY_BALANCE, invoice_id)
