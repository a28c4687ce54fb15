"""Receiving and applying payments: the one place where money meets an invoice.

`receive` is used by the Stripe webhook and the accounting API; `apply_payment` by both of them and
by the late match when an InvoiceIssued arrives after its payments (`apply_pending`). Everything runs
in the caller's transaction, which commits before the HTTP 2xx (the 2xx is the acknowledgement) or
before the consumer commits its offset.

Races between a payment and its invoice are closed with transaction-scoped advisory locks on the
matching keys (tenant + invoice id / external id / number): a payment that finds no invoice and the
InvoiceIssued that would have matched it take the same lock, so one of them always sees the other.
"""

from dataclasses import replace
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_reconciliation import messages
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import (
    APPLIED,
    CLOSED,
    INVOICE_CLOSED,
    PENDING_MATCH,
    REJECTED_CURRENCY_MISMATCH,
    UNMATCHED,
    IncomingPayment,
    MatchKeys,
    Outcome,
    apply_to_balance,
    invoice_keys,
    invoice_status,
)

log = get_logger(__name__)


class CurrencyMismatch(Exception):
    def __init__(self, invoice_id: str, invoice_currency: str, payment_currency: str):
        super().__init__(f"invoice {invoice_id} is in {invoice_currency}, the payment is in {payment_currency}")
        self.invoice_id = invoice_id
        self.invoice_currency = invoice_currency


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
    await _save_unapplied(conn, p, UNMATCHED, invoice_id=None, balance_remaining=None, settled=False)
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


async def _save_unapplied(
    conn: asyncpg.Connection,
    p: IncomingPayment,
    status: str,
    *,
    invoice_id: str | None,
    balance_remaining: Decimal | None,
    settled: bool,
) -> None:
    """Record p as applied to nothing (its whole amount unapplied): kept until its invoice is known,
    or refused by it."""
    assert p.acknowledged_at is not None
    await repo.save_payment(
        conn,
        p,
        invoice_id=invoice_id,
        status=status,
        amount_applied=Decimal(0),
        unapplied_amount=p.amount,
        balance_remaining=balance_remaining,
        settled=settled,
        acknowledged_at=p.acknowledged_at,
        applied_at=None,
    )


async def apply_payment(
    conn: asyncpg.Connection, invoice_id: str, p: IncomingPayment, *, strict_currency: bool = False
) -> Outcome:
    """Apply p to the invoice: lock it, reduce its balance, record the payment, write PaymentReceived.

    An overpayment leaves the balance at 0 and keeps the surplus as `unapplied_amount`. A payment on
    an invoice that is already paid is recorded with amount_applied 0 and publishes nothing: the
    invoice's settling PaymentReceived went out before, and downstream has nothing new to act on.
    A payment for a void or written-off invoice is recorded `invoice_closed`, its whole amount
    unapplied, and publishes nothing either (the invoice's stop went out from invoice-ingest).
    """
    if p.acknowledged_at is None:
        p = await acknowledging(conn, p)
    invoice = await repo.lock_invoice(conn, p.tenant_id, invoice_id)
    assert invoice is not None, "matched to an invoice of the tenant (invoices are never deleted)"
    acknowledged_at = p.acknowledged_at
    assert acknowledged_at is not None
    if invoice["currency"] != p.currency:
        if strict_currency:
            raise CurrencyMismatch(invoice_id, invoice["currency"], p.currency)
        await _save_unapplied(
            conn,
            p,
            REJECTED_CURRENCY_MISMATCH,
            invoice_id=invoice_id,
            balance_remaining=invoice["balance"],
            settled=invoice["status"] == "paid",
        )
        log.error(
            "reconciliation.payment.currency_mismatch",
            payment_id=p.payment_id,
            invoice_id=invoice_id,
            invoice_currency=invoice["currency"],
            payment_currency=p.currency,
            amount=format_amount(p.amount, p.currency),
            source=p.source,
            source_reference=p.source_reference,
        )
        return Outcome(REJECTED_CURRENCY_MISMATCH, p.payment_id, invoice_id, invoice["status"] == "paid")

    if invoice["status"] in CLOSED:
        await _save_unapplied(
            conn, p, INVOICE_CLOSED, invoice_id=invoice_id, balance_remaining=invoice["balance"], settled=False
        )
        log.warning(
            "reconciliation.payment.invoice_closed",
            payment_id=p.payment_id,
            invoice_id=invoice_id,
            invoice_status=invoice["status"],
            amount=format_amount(p.amount, p.currency),
            source=p.source,
            source_reference=p.source_reference,
        )
        return Outcome(INVOICE_CLOSED, p.payment_id, invoice_id, False)

    currency = p.currency
    money = apply_to_balance(quantize(invoice["balance"], currency), p.amount)
    applied, remaining, unapplied, settled = money.applied, money.remaining, money.unapplied, money.settled
    if applied > 0:
        await repo.set_invoice_balance(conn, invoice_id, remaining, invoice_status(remaining))
    await repo.save_payment(
        conn,
        p,
        invoice_id=invoice_id,
        status=APPLIED,
        amount_applied=applied,
        unapplied_amount=unapplied,
        balance_remaining=remaining,
        settled=settled,
        acknowledged_at=acknowledged_at,
        applied_at=utcnow(),
    )
    fields = dict(
        payment_id=p.payment_id,
        invoice_id=invoice_id,
        source=p.source,
        source_reference=p.source_reference,
        amount=format_amount(p.amount, currency),
        amount_applied=format_amount(applied, currency),
        balance_remaining=format_amount(remaining, currency),
        settled=settled,
    )
    if applied == 0:
        log.warning("reconciliation.payment.invoice_already_paid", **fields)
        return Outcome(APPLIED, p.payment_id, invoice_id, settled)
    if unapplied > 0:
        log.warning("reconciliation.payment.overpaid", unapplied_amount=format_amount(unapplied, currency), **fields)
    await outbox.add(
        conn,
        messages.payment_received(
            p,
            invoice_id=invoice_id,
            invoice_external_id=invoice["external_id"],
            applied=applied,
            remaining=remaining,
            settled=settled,
            acknowledged_at=acknowledged_at,
        ),
    )
    log.info("reconciliation.payment.applied", **fields)
    return Outcome(APPLIED, p.payment_id, invoice_id, settled)


async def apply_pending(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, external_id: str, number: str
) -> int:
    """Apply the payments that arrived before this invoice, oldest first. Caller holds the key locks."""
    rows = await repo.unmatched_for_invoice(conn, tenant_id, invoice_id, external_id, number)
    for row in rows:
        payment = payment_from_row(row)
        log.info("reconciliation.payment.late_match", payment_id=payment.payment_id, invoice_id=invoice_id)
        await apply_payment(conn, invoice_id, payment)
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
        acknowledged_at=row["acknowledged_at"],
    )
