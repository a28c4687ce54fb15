"""Receiving payments that name their invoice (Stripe's metadata, the accounting API's invoice id):
find the invoice by the payment's keys and allocate the payment to it (allocations.allocate, where
money meets a balance), or keep it unmatched until the invoice is known.

`receive` is used by the Stripe webhook and the accounting API; `apply_payment` by both of them and
by the late match when an InvoiceIssued arrives after its payments (`apply_pending`). Everything runs
in the caller's transaction, which commits before the HTTP 2xx (the 2xx is the acknowledgement) or
before the consumer commits its offset.

Races between a payment and its invoice are closed with transaction-scoped advisory locks on the
matching keys (tenant + invoice id / external id / number): a payment that finds no invoice and the
InvoiceIssued that would have matched it take the same lock, so one of them always sees the other.
"""

from dataclasses import replace

import asyncpg

from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_reconciliation import repository as repo
from dunning_reconciliation.allocations import CurrencyMismatch, allocate, hold_unmatched
from dunning_reconciliation.domain import (
    APPLIED,
    INVOICE_CLOSED,
    PENDING_MATCH,
    REJECTED_CURRENCY_MISMATCH,
    Allocation,
    IncomingPayment,
    MatchKeys,
    Outcome,
    invoice_keys,
)

__all__ = ["CurrencyMismatch", "acknowledging", "apply_payment", "apply_pending", "receive"]

log = get_logger(__name__)


async def lock_keys(conn: asyncpg.Connection, tenant_id: str, keys: MatchKeys) -> None:
    await repo.lock_names(conn, keys.lock_names(tenant_id))


async def acknowledging(conn: asyncpg.Connection, p: IncomingPayment) -> IncomingPayment:
    """The payment with its acknowledgement time, read inside the payments watermark's fence (see
    watermark.py). Call it first in the transaction, before any other lock: a transaction waiting
    for the fence must hold nothing another fence holder could wait for."""
    return replace(p, acknowledged_at=await repo.acknowledge_time(conn))


async def receive(conn: asyncpg.Connection, p: IncomingPayment, *, strict_currency: bool = False) -> Outcome:
    """Match the payment to its invoice and apply it, or keep it until the invoice is known."""
    if p.acknowledged_at is None:
        p = await acknowledging(conn, p)
    await lock_keys(conn, p.tenant_id, p.keys)
    invoice_id = await repo.find_invoice(conn, p.tenant_id, p.keys)
    if invoice_id is not None:
        return await apply_payment(conn, invoice_id, p, strict_currency=strict_currency)
    await hold_unmatched(conn, p, [])
    log.info(
        "reconciliation.payment.pending_match",
        payment_id=p.payment_id,
        source=p.source,
        source_reference=p.source_reference,
        match_invoice_id=p.keys.invoice_id,
        match_external_ids=list(p.keys.external_ids),
        match_numbers=list(p.keys.numbers),
    )
    return Outcome(PENDING_MATCH, p.payment_id)


# The rule a payment that names its invoice matched by, per source (a late match has its own).
RULES = {"api": "api"}


def named_by(p: IncomingPayment, invoice_id: str) -> str:
    """Why the payment goes to the invoice, in words: the key it names it by."""
    if p.keys.invoice_id == invoice_id:
        return f"the payment names invoice {invoice_id}"
    if p.keys.external_ids:
        return f"the payment names external id {', '.join(p.keys.external_ids)}"
    return f"the payment names invoice number {', '.join(p.keys.numbers)}"


async def apply_payment(
    conn: asyncpg.Connection,
    invoice_id: str,
    p: IncomingPayment,
    *,
    strict_currency: bool = False,
    rule: str | None = None,
) -> Outcome:
    """Apply p to the invoice it names, through allocations.allocate (one allocation, capped at the
    balance).

    An overpayment leaves the balance at 0; its excess becomes the customer's credit. A payment on an
    invoice that is already paid applies nothing and publishes no PaymentReceived: the invoice's
    settling one went out before (its money becomes customer credit too). A payment for a void or
    written-off invoice is recorded `invoice_closed`, its whole amount unapplied, and publishes
    nothing (the invoice's stop went out from invoice-ingest). A currency mismatch is recorded
    `rejected_currency_mismatch` (with `strict_currency`: CurrencyMismatch, nothing changed).
    """
    if p.acknowledged_at is None:
        p = await acknowledging(conn, p)
    allocation = Allocation(invoice_id, p.amount, rule or RULES.get(p.source, "metadata"), named_by(p, invoice_id))
    result = await allocate(conn, p, [allocation], strict_currency=strict_currency)
    if result.status in (REJECTED_CURRENCY_MISMATCH, INVOICE_CLOSED):
        return Outcome(result.status, p.payment_id, invoice_id, result.settled)
    if not result.allocation_ids:
        log.warning(
            "reconciliation.payment.invoice_already_paid",
            payment_id=p.payment_id,
            invoice_id=invoice_id,
            amount=format_amount(p.amount, p.currency),
            credited=format_amount(result.credited, p.currency),
        )
    elif result.credited > 0 or result.unallocated > 0:
        log.warning(
            "reconciliation.payment.overpaid",
            payment_id=p.payment_id,
            invoice_id=invoice_id,
            credited=format_amount(result.credited, p.currency),
            unallocated_amount=format_amount(result.unallocated, p.currency),
        )
    return Outcome(APPLIED, p.payment_id, invoice_id, result.settled)


async def apply_pending(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, external_id: str, number: str
) -> int:
    """Apply the payments that arrived before this invoice, oldest first. Caller holds the key locks."""
    rows = await repo.unmatched_for_invoice(conn, tenant_id, invoice_id, external_id, number)
    for row in rows:
        payment = payment_from_row(row)
        log.info("reconciliation.payment.late_match", payment_id=payment.payment_id, invoice_id=invoice_id)
        await apply_payment(conn, invoice_id, payment, rule="late_match")
    return len(rows)


async def lock_invoice_keys(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, external_id: str, number: str
) -> None:
    await lock_keys(conn, tenant_id, invoice_keys(invoice_id, external_id, number))


def payment_from_row(row: asyncpg.Record) -> IncomingPayment:
    return IncomingPayment(
        tenant_id=row["tenant_id"],
        source=row["source"],
        source_reference=row["source_reference"],
        currency=row["currency"],
        amount=quantize(row["amount"], row["currency"]),
        received_at=row["received_at"],
        keys=MatchKeys.of(row["match_invoice_id"], row["match_external_ids"], row["match_numbers"]),
        stripe_object_id=row["stripe_object_id"],
        fingerprint=row["fingerprint"],
        payment_id=row["payment_id"],
        payer_name=row["payer_name"],
        payer_account=row["payer_account"],
        remittance=row["remittance"],
        creditor_reference=row["creditor_reference"],
        statement_id=row["statement_id"],
        customer_id=row["customer_id"],
        acknowledged_at=row["acknowledged_at"],
    )
