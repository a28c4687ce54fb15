"""Money that moves after a payment was allocated: reversals (refunds, lost chargebacks, failed
debits), customer credit (an over-payment's excess), and pending money (a debit still processing, a
disputed card payment). Everything runs in the caller's transaction."""

from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning_reconciliation.domain import IncomingPayment, Outcome, PaymentRef, ReverseResult


class ReversalError(Exception):
    """A reversal a caller can fix (the API answers 4xx naming `field`); nothing was changed."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


async def reverse(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    source: str,
    source_reference: str,
    payment_ref: PaymentRef,
    amount: Decimal | None,
    kind: str,
    reversed_at: datetime,
) -> ReverseResult:
    """Take `amount` (None: all that is left) back from a payment; idempotent on the source reference."""
    raise NotImplementedError


async def pending(
    conn: asyncpg.Connection,
    payment: IncomingPayment,
    kind: str,
    *,
    invoice_id: str | None = None,
    payment_ref: PaymentRef | None = None,
) -> Outcome:
    """processing: store the payment `processing` (nothing applied) + PaymentPending; chargeback: on
    an existing payment, PaymentPending per invoice it is allocated to."""
    raise NotImplementedError


async def pending_ended(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    payment_ref: PaymentRef,
    kind: str,
    outcome: str,
    source_reference: str,
    ended_at: datetime,
) -> Outcome:
    """End the pause: PaymentPendingEnded per invoice, then allocate / fail / reverse."""
    raise NotImplementedError


async def apply_customer_credit(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, *, invoice_id: str | None = None
) -> int:
    """Apply the customer's held credit to its open invoices, oldest first (or to one invoice)."""
    raise NotImplementedError
