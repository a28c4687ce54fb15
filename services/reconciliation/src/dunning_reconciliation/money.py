"""Money that moves after a payment was allocated: reversals (refunds, lost chargebacks, failed
debits) and pending money (a debit still processing, a disputed card payment). Customer credit is
credits.py (re-exported here). Everything runs in the caller's transaction, which has joined the
payments watermark's fence first (`reconcile.acknowledging`).

A reversal takes its amount first from the payment's unallocated money, then from its customer
credit's unused remainder, then from its allocations newest first, then from its credit's
applications newest first; every invoice touched gets its balance back (a paid one reopens), its
balance_version bumped and one PaymentReversed. The parts are kept (reversal_parts): the allocation
rows shrink, their history does not.
"""

from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_reconciliation import messages, reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.credits import apply_customer_credit, credit_lock_name
from dunning_reconciliation.domain import (
    CLOSED,
    FAILED,
    PROCESSING,
    UNMATCHED,
    IncomingPayment,
    Outcome,
    PaymentRef,
    ReverseResult,
    invoice_status,
)

__all__ = ["ReversalError", "apply_customer_credit", "pending", "pending_ended", "reverse"]

log = get_logger(__name__)
KINDS = ("refund", "chargeback", "payment_failed")


class ReversalError(Exception):
    """A reversal a caller can fix (the API answers 4xx naming `field`); nothing was changed."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


async def _payment(conn: asyncpg.Connection, tenant_id: str, ref: PaymentRef) -> asyncpg.Record | None:
    return await repo.lock_payment(
        conn,
        tenant_id,
        payment_id=ref.payment_id,
        source=ref.source,
        source_reference=ref.source_reference,
        stripe_object_id=ref.stripe_object_id,
    )


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
    """Take `amount` (None: all that is left) back from a payment; idempotent on (tenant, source,
    source_reference): a replay answers the first reversal with `replayed`. ReversalError (nothing
    changed) for an unknown payment or kind, or an amount it does not have."""
    if kind not in KINDS:
        raise ReversalError("kind", f"must be one of {', '.join(KINDS)}")
    acknowledged_at = await repo.acknowledge_time(conn)  # shared: joins the fence, never waits
    await repo.lock_names(conn, [f"reconciliation-reversal\x1f{tenant_id}\x1f{source}\x1f{source_reference}"])
    earlier = await repo.reversal_by_reference(conn, tenant_id, source, source_reference)
    if earlier is not None:
        return ReverseResult(earlier["reversal_id"], earlier["payment_id"], earlier["amount"], (), replayed=True)
    payment = await _payment(conn, tenant_id, payment_ref)
    if payment is None:
        raise ReversalError("payment", f"no payment {payment_ref} for this tenant", 404)
    currency, payment_id = payment["currency"], payment["payment_id"]
    customers = await repo.customers_of_payment(conn, payment_id)  # lock order: see allocations.py
    await repo.lock_names(conn, [credit_lock_name(tenant_id, c) for c in customers])
    credits = [dict(c) for c in await repo.lock_credits_of_payment(conn, payment_id)]
    allocations = await repo.lock_active_allocations(conn, payment_id)
    applications = await repo.lock_applications(conn, [c["credit_id"] for c in credits]) if credits else []
    pool = payment["unallocated_amount"] if payment["status"] not in (PROCESSING, FAILED) else Decimal(0)
    left = (
        pool
        + sum((c["remaining"] for c in credits), Decimal(0))
        + sum((a["amount"] for a in allocations), Decimal(0))
        + sum((a["amount"] for a in applications), Decimal(0))
    )
    if amount is None and left <= 0:  # all that is left, and nothing is: nothing to record
        log.info("reconciliation.payment.nothing_to_reverse", payment_id=payment_id, source_reference=source_reference)
        return ReverseResult("", payment_id, Decimal(0))
    wanted = left if amount is None else amount
    if wanted <= 0 or quantize(wanted, currency) != wanted:
        raise ReversalError("amount", f"must be more than 0, in {currency}'s digits")
    if wanted > left:
        raise ReversalError(
            "amount",
            f"{format_amount(wanted, currency)} is more than is left of the payment ({format_amount(left, currency)})",
        )

    reversal_id, rest = new_id("rev"), wanted
    parts: list[dict] = []
    taken = min(pool, rest)
    if taken > 0:
        parts.append({"invoice_id": None, "allocation_id": None, "application_id": None, "amount": str(taken)})
        rest -= taken
    for credit in credits:
        taken = min(credit["remaining"], rest)
        if taken > 0:
            await repo.take_from_credit(conn, credit["credit_id"], amount=taken, remaining=taken)
            parts.append({"invoice_id": None, "allocation_id": None, "application_id": None, "amount": str(taken)})
            rest -= taken
    per_invoice: dict[str, Decimal] = defaultdict(Decimal)
    for a in allocations:
        taken = min(a["amount"], rest)
        if taken <= 0:
            break
        await repo.reduce_allocation(conn, a["allocation_id"], taken)
        parts.append(
            {
                "invoice_id": a["invoice_id"],
                "allocation_id": a["allocation_id"],
                "application_id": None,
                "amount": str(taken),
            }
        )
        per_invoice[a["invoice_id"]] += taken
        rest -= taken
    for application in applications:
        taken = min(application["amount"], rest)
        if taken <= 0:
            break
        credit = next(c for c in credits if c["credit_id"] == application["credit_id"])
        await repo.reduce_application(conn, application["application_id"], taken)
        await repo.take_from_credit(conn, credit["credit_id"], amount=taken, remaining=Decimal(0))
        parts.append(
            {
                "invoice_id": application["invoice_id"],
                "allocation_id": None,
                "application_id": application["application_id"],
                "amount": str(taken),
            }
        )
        per_invoice[application["invoice_id"]] += taken
        rest -= taken
    assert rest == 0

    await repo.insert_reversal(
        conn,
        reversal_id=reversal_id,
        tenant_id=tenant_id,
        payment_id=payment_id,
        kind=kind,
        source=source,
        source_reference=source_reference,
        amount=wanted,
        created_at=reversed_at,
        parts=parts,
    )
    invoices = await repo.lock_invoices(conn, tenant_id, per_invoice)
    last: tuple[str, Decimal] | None = None
    for invoice_id in sorted(per_invoice):
        invoice = invoices[invoice_id]
        if invoice["status"] in CLOSED:  # void or written off: it stays closed, owing nothing; no event
            log.info(
                "reconciliation.payment.reversed_on_closed_invoice", reversal_id=reversal_id, invoice_id=invoice_id
            )
            continue
        balance = quantize(invoice["balance"] + per_invoice[invoice_id], currency)
        status = invoice_status(balance)
        version = await repo.set_invoice_balance(conn, invoice_id, balance, status)
        await outbox.add(
            conn,
            messages.payment_reversed(
                payment,
                invoice,
                reversal_id=reversal_id,
                kind=kind,
                source=source,
                source_reference=source_reference,
                amount=per_invoice[invoice_id],
                balance=balance,
                version=version,
                reversed_at=reversed_at,
                acknowledged_at=acknowledged_at,
            ),
        )
        last = (invoice_id, balance)
        log.info(
            "reconciliation.payment.reversed_on_invoice",
            reversal_id=reversal_id,
            invoice_id=invoice_id,
            amount=format_amount(per_invoice[invoice_id], currency),
            balance_remaining=format_amount(balance, currency),
            balance_version=version,
            reopened=invoice["status"] == "paid" and status == "open",
        )
    await repo.update_payment(
        conn,
        payment_id,
        invoice_id=last[0] if last else None,
        balance_remaining=last[1] if last else None,
        settled=(last[1] <= 0) if last else None,
        refunded=wanted,
    )
    log.info(
        "reconciliation.payment.reversed",
        reversal_id=reversal_id,
        payment_id=payment_id,
        kind=kind,
        source=source,
        source_reference=source_reference,
        amount=format_amount(wanted, currency),
        invoices=len(per_invoice),
    )
    return ReverseResult(reversal_id, payment_id, wanted, tuple(sorted(per_invoice)))


def _pending_money(p: IncomingPayment) -> dict:
    """The money an event says is pending, as messages.payment_pending reads a payment."""
    return {
        "payment_id": p.payment_id,
        "tenant_id": p.tenant_id,
        "source": p.source,
        "source_reference": p.source_reference,
        "currency": p.currency,
        "amount": p.amount,
    }


async def pending(
    conn: asyncpg.Connection,
    payment: IncomingPayment,
    kind: str,
    *,
    invoice_id: str | None = None,
    payment_ref: PaymentRef | None = None,
) -> Outcome:
    """processing: the payment stored `processing` (nothing applied, nothing counted) and, if its
    invoice is known (`invoice_id`, else by its keys), PaymentPending(processing) for it.
    chargeback: on the existing payment (`payment_ref`, else payment.payment_id), PaymentPending
    (chargeback) per invoice it is allocated to; `payment` names the disputed money."""
    p = payment if payment.acknowledged_at else replace(payment, acknowledged_at=await repo.acknowledge_time(conn))
    assert p.acknowledged_at is not None
    if kind == "processing":
        if invoice_id is None:
            await reconcile.lock_keys(conn, p.tenant_id, p.keys)
            invoice_id = await repo.find_invoice(conn, p.tenant_id, p.keys)
        if not await repo.insert_payment(conn, p, status=PROCESSING, acknowledged_at=p.acknowledged_at):
            row = await repo.lock_payment(conn, p.tenant_id, payment_id=p.payment_id)
            assert row is not None, "the insert conflicted on it"
            return Outcome(row["status"], p.payment_id, row["invoice_id"], row["settled"])
        invoice = await repo.lock_invoice(conn, p.tenant_id, invoice_id) if invoice_id else None
        if invoice is None or invoice["status"] in CLOSED or invoice["currency"] != p.currency:
            log.info("reconciliation.payment.processing", payment_id=p.payment_id, invoice_id=None)
            return Outcome(PROCESSING, p.payment_id)
        await repo.update_payment(
            conn,
            p.payment_id,
            status=PROCESSING,
            invoice_id=invoice_id,
            balance_remaining=invoice["balance"],
            settled=False,
        )
        await outbox.add(
            conn,
            messages.payment_pending(
                _pending_money(p), invoice, kind=kind, since=p.received_at, acknowledged_at=p.acknowledged_at
            ),
        )
        log.info("reconciliation.payment.processing", payment_id=p.payment_id, invoice_id=invoice_id)
        return Outcome(PROCESSING, p.payment_id, invoice_id)
    if kind != "chargeback":
        raise ReversalError("kind", "must be processing or chargeback")
    row = await _payment(conn, p.tenant_id, payment_ref or PaymentRef(payment_id=p.payment_id))
    if row is None:
        raise ReversalError("payment", f"no payment {payment_ref or p.payment_id} for this tenant", 404)
    money = {**_pending_money(p), "payment_id": row["payment_id"]}
    invoice_ids = sorted({a["invoice_id"] for a in await repo.lock_active_allocations(conn, row["payment_id"])})
    invoices = await repo.lock_invoices(conn, p.tenant_id, invoice_ids)
    for invoice_id in invoice_ids:
        await outbox.add(
            conn,
            messages.payment_pending(
                money, invoices[invoice_id], kind=kind, since=p.received_at, acknowledged_at=p.acknowledged_at
            ),
        )
    log.info("reconciliation.payment.disputed", payment_id=row["payment_id"], invoices=len(invoice_ids))
    return Outcome("disputed", row["payment_id"], invoice_ids[0] if invoice_ids else None)


async def pending_ended(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    payment_ref: PaymentRef,
    kind: str,
    outcome: str,
    source_reference: str,
    ended_at: datetime,
    amount: Decimal | None = None,
) -> Outcome:
    """End the pause: PaymentPendingEnded per invoice, then processing+succeeded -> the payment is
    received as any other (allocated, or unmatched); processing+failed -> status failed;
    chargeback+lost -> reverse(kind chargeback) of `amount` (None: all that is left); won -> nothing."""
    row = await _payment(conn, tenant_id, payment_ref)
    if row is None:
        raise ReversalError("payment", f"no payment {payment_ref} for this tenant", 404)
    payment_id = row["payment_id"]
    if kind == "processing":
        if row["status"] != PROCESSING:  # ended before: nothing new
            return Outcome(row["status"], payment_id, row["invoice_id"], row["settled"])
        if outcome not in ("succeeded", "failed"):
            raise ReversalError("outcome", "a processing payment ends succeeded or failed")
        if row["invoice_id"]:
            await outbox.add(conn, _ended(row, row["invoice_id"], kind, outcome, source_reference, ended_at))
        if outcome == "failed":
            await repo.update_payment(conn, payment_id, status=FAILED)
            log.info("reconciliation.payment.processing_failed", payment_id=payment_id)
            return Outcome(FAILED, payment_id, row["invoice_id"])
        await repo.update_payment(conn, payment_id, status=UNMATCHED)
        p = replace(reconcile.payment_from_row(row), acknowledged_at=await repo.acknowledge_time(conn))
        log.info("reconciliation.payment.processing_succeeded", payment_id=payment_id)
        return await reconcile.receive(conn, p)
    if kind != "chargeback" or outcome not in ("won", "lost"):
        raise ReversalError("outcome", "a chargeback ends won or lost")
    invoice_ids = sorted({a["invoice_id"] for a in await repo.lock_active_allocations(conn, payment_id)})
    for invoice_id in invoice_ids:
        await outbox.add(conn, _ended(row, invoice_id, kind, outcome, source_reference, ended_at))
    log.info("reconciliation.payment.dispute_closed", payment_id=payment_id, outcome=outcome)
    if outcome == "won":
        return Outcome(row["status"], payment_id, invoice_ids[0] if invoice_ids else None, row["settled"])
    result = await reverse(
        conn,
        tenant_id,
        source=row["source"],
        source_reference=source_reference,
        payment_ref=PaymentRef(payment_id=payment_id),
        amount=amount,
        kind="chargeback",
        reversed_at=ended_at,
    )
    after = await repo.get_payment(conn, tenant_id, payment_id)
    assert after is not None, "reversed just now"
    return Outcome(after["status"], payment_id, result.invoice_ids[0] if result.invoice_ids else None, False)


def _ended(row, invoice_id: str, kind: str, outcome: str, source_reference: str, ended_at: datetime):
    return messages.payment_pending_ended(
        row, invoice_id, kind=kind, outcome=outcome, source_reference=source_reference, ended_at=ended_at
    )
