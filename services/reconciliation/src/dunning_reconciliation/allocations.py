"""Allocating a payment's money to invoices: the one place where money meets an invoice's balance.

Everything runs in the caller's transaction; the caller has called `reconcile.acknowledging` first
(the payments watermark's fence). Each allocation locks its invoice (several: in id order), is capped
at the open balance, bumps the invoice's `balance_version` and writes exactly one PaymentReceived.
"""

from collections.abc import Sequence

import asyncpg

from dunning_reconciliation.domain import Allocation, AllocationResult, IncomingPayment


class AllocationError(Exception):
    """A request a caller can fix (the API answers 4xx naming `field`); nothing was changed."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


async def allocate(
    conn: asyncpg.Connection,
    payment: IncomingPayment,
    allocations: Sequence[Allocation],
    *,
    allocated_by: str = "system",
    excess_to_credit: bool = True,
) -> AllocationResult:
    """Store/refresh the payment row, apply each allocation, keep or credit the rest."""
    raise NotImplementedError


async def hold_unmatched(conn: asyncpg.Connection, payment: IncomingPayment, suggestions: list[dict]) -> None:
    """Store the payment `unmatched` with its suggested candidates (the queue)."""
    raise NotImplementedError


async def unallocate(
    conn: asyncpg.Connection, tenant_id: str, payment_id: str, allocation_id: str, *, reason: str, by: str = "api"
) -> dict:
    """Undo one allocation: balance back (+ PaymentUnallocated), payment back to partially_allocated/unmatched."""
    raise NotImplementedError
