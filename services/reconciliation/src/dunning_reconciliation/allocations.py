"""Allocating a payment's money to invoices: the one place where money meets an invoice's balance.

Everything runs in the caller's transaction; the caller has called `reconcile.acknowledging` first
(the payments watermark's fence). Locks are taken in one order everywhere (here, money.reverse,
credits.apply_customer_credit): the payment's row, its customers' credit lock, the invoices (id
order), the credit rows. Each allocation locks its invoice (several: in id order, in one
statement), is capped at the open balance, bumps the invoice's `balance_version` and writes exactly one
PaymentReceived stating it. The payment's money columns are recomputed from its allocations and
credit (repository.update_payment), never added up by hand.
"""

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import format_amount, quantize
from dunning_reconciliation import messages
from dunning_reconciliation import repository as repo
from dunning_reconciliation.credits import apply_customer_credit, credit_lock_name, hold_credit
from dunning_reconciliation.domain import (
    CLOSED,
    FAILED,
    INVOICE_CLOSED,
    REJECTED_CURRENCY_MISMATCH,
    REVERSED,
    UNMATCHED,
    Allocation,
    AllocationResult,
    IncomingPayment,
    invoice_status,
)

log = get_logger(__name__)


class AllocationError(Exception):
    """A request a caller can fix (the API answers 4xx naming `field`); nothing was changed."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class CurrencyMismatch(AllocationError):
    def __init__(self, invoice_id: str, invoice_currency: str, payment_currency: str):
        super().__init__(
            "currency", f"invoice {invoice_id} is in {invoice_currency}, the payment is in {payment_currency}"
        )
        self.invoice_id = invoice_id
        self.invoice_currency = invoice_currency


async def _stored(conn: asyncpg.Connection, p: IncomingPayment) -> tuple[IncomingPayment, asyncpg.Record]:
    """p with its acknowledgement time, its row inserted (unmatched) unless known, and locked."""
    if p.acknowledged_at is None:
        p = replace(p, acknowledged_at=await repo.acknowledge_time(conn))
    assert p.acknowledged_at is not None
    await repo.insert_payment(conn, p, status=UNMATCHED, acknowledged_at=p.acknowledged_at)
    row = await repo.lock_payment(conn, p.tenant_id, payment_id=p.payment_id)
    assert row is not None
    return p, row


async def allocate(
    conn: asyncpg.Connection,
    payment: IncomingPayment,
    allocations: Sequence[Allocation],
    *,
    allocated_by: str = "system",
    excess_to_credit: bool = True,
    strict_currency: bool = False,
) -> AllocationResult:
    """Store/refresh the payment row, then apply each allocation in the order given, capped at what
    is left of the payment and at the invoice's open balance (a paid invoice takes nothing; a void or
    written-off one is skipped). What is left: with `excess_to_credit` and a known customer (the
    payment's, else its first invoice's) it becomes customer credit, applied at once to the
    customer's oldest open invoices, else held; otherwise it stays unallocated.

    A currency that differs from an invoice's: with `strict_currency` (or an allocation by hand)
    CurrencyMismatch, nothing changed; otherwise the payment is recorded rejected_currency_mismatch."""
    invoice_ids = [a.invoice_id for a in allocations]
    p, row = await _stored(conn, payment)
    if excess_to_credit and invoice_ids:  # lock order: payment row, customer credit, invoices, credit rows
        customers = set(await repo.customers_of_invoices(conn, p.tenant_id, invoice_ids))
        customers |= {p.customer_id} if p.customer_id else set()
        await repo.lock_names(conn, [credit_lock_name(p.tenant_id, c) for c in customers])
    if row["status"] in (FAILED, REVERSED):
        raise AllocationError(
            "payment_id", f"payment {p.payment_id} is {row['status']}: it has no money to allocate", 409
        )
    invoices = {k: dict(v) for k, v in (await repo.lock_invoices(conn, p.tenant_id, invoice_ids)).items()}
    for a in allocations:
        if a.amount <= 0:
            raise AllocationError("amount", f"must be more than 0 (invoice {a.invoice_id})")
        if quantize(a.amount, p.currency) != a.amount:
            raise AllocationError("amount", f"has more decimals than {p.currency} allows")
        invoice = invoices.get(a.invoice_id)
        if invoice is None:
            raise AllocationError("invoice_id", f"no invoice {a.invoice_id!r} for this tenant", 404)
        if invoice["currency"] != p.currency:
            if strict_currency or allocated_by != "system":
                raise CurrencyMismatch(a.invoice_id, invoice["currency"], p.currency)
            return await _refused(conn, p, invoice, REJECTED_CURRENCY_MISMATCH)
    if invoice_ids and all(invoices[i]["status"] in CLOSED for i in invoice_ids):
        return await _refused(conn, p, invoices[invoice_ids[0]], INVOICE_CLOSED)

    left, now = row["unallocated_amount"], utcnow()
    written: list[str] = []
    touched: list[str] = []
    for a in allocations:
        invoice = invoices[a.invoice_id]
        if invoice["status"] in CLOSED:
            log.warning("reconciliation.allocation.invoice_closed", payment_id=p.payment_id, invoice_id=a.invoice_id)
            continue
        touched.append(a.invoice_id)
        take = max(min(a.amount, left, quantize(invoice["balance"], p.currency)), Decimal(0))
        if take <= 0:
            continue
        written.append(await _apply(conn, p, invoice, a, take, allocated_by=allocated_by, at=now))
        left -= take

    credited, credit_id = Decimal(0), None
    customer = p.customer_id or next((invoices[i]["customer_id"] for i in touched if invoices[i]["customer_id"]), None)
    if left > 0 and excess_to_credit and touched and customer:
        credit = await hold_credit(conn, p, customer_id=customer, amount=left)
        credited, credit_id, left = left, credit["credit_id"], Decimal(0)
    first = invoices[touched[0]] if touched else None
    first_rule = allocations[0] if allocations else None
    updated = await repo.update_payment(
        conn,
        p.payment_id,
        invoice_id=first["invoice_id"] if first else None,
        balance_remaining=first["balance"] if first else None,
        settled=(first["balance"] <= 0) if first else None,
        applied_at=now if written or credited else None,
        match_rule=first_rule.rule if first_rule else None,
        match_reason="; ".join(dict.fromkeys(a.reason for a in allocations)) if allocations else None,
    )
    if credited > 0 and customer is not None:
        await apply_customer_credit(conn, p.tenant_id, customer)
    if left > 0 and touched:
        log.warning(
            "reconciliation.payment.unallocated_left",
            payment_id=p.payment_id,
            unallocated_amount=format_amount(left, p.currency),
        )
    return AllocationResult(
        status=updated["status"],
        payment_id=p.payment_id,
        allocation_ids=tuple(written),
        invoice_ids=tuple(touched),
        allocated=updated["amount_applied"] - row["amount_applied"],
        credited=credited,
        unallocated=updated["unallocated_amount"],
        settled=bool(first and first["balance"] <= 0),
        credit_id=credit_id,
    )


async def _apply(
    conn: asyncpg.Connection,
    p: IncomingPayment,
    invoice: dict,
    a: Allocation,
    take: Decimal,
    *,
    allocated_by: str,
    at,
) -> str:
    """Apply `take` of p to the (locked) invoice: allocation row, balance, PaymentReceived."""
    allocation_id = new_id("alc")
    await repo.insert_allocation(
        conn,
        allocation_id=allocation_id,
        tenant_id=p.tenant_id,
        payment_id=p.payment_id,
        invoice_id=invoice["invoice_id"],
        currency=p.currency,
        amount=take,
        rule=a.rule,
        reason=a.reason,
        allocated_by=allocated_by,
        created_at=at,
    )
    remaining = quantize(invoice["balance"], p.currency) - take
    version = await repo.set_invoice_balance(conn, invoice["invoice_id"], remaining, invoice_status(remaining))
    invoice.update(balance=remaining, status=invoice_status(remaining), balance_version=version)
    assert p.acknowledged_at is not None
    await outbox.add(
        conn,
        messages.payment_received(
            p,
            invoice_id=invoice["invoice_id"],
            invoice_external_id=invoice["external_id"],
            applied=take,
            remaining=remaining,
            settled=remaining <= 0,
            acknowledged_at=p.acknowledged_at,
            allocation_id=allocation_id,
            match_rule=a.rule,
            match_reason=a.reason,
            balance_version=version,
        ),
    )
    log.info(
        "reconciliation.payment.allocated",
        payment_id=p.payment_id,
        allocation_id=allocation_id,
        invoice_id=invoice["invoice_id"],
        rule=a.rule,
        amount_applied=format_amount(take, p.currency),
        balance_remaining=format_amount(remaining, p.currency),
        balance_version=version,
    )
    return allocation_id


async def _refused(conn: asyncpg.Connection, p: IncomingPayment, invoice: dict, status: str) -> AllocationResult:
    """Record p as refused by its invoice (currency mismatch, closed): applied to nothing."""
    settled = invoice["status"] == "paid" if status == REJECTED_CURRENCY_MISMATCH else False
    await repo.update_payment(
        conn,
        p.payment_id,
        status=status,
        invoice_id=invoice["invoice_id"],
        balance_remaining=invoice["balance"],
        settled=settled,
    )
    fields = dict(
        payment_id=p.payment_id,
        invoice_id=invoice["invoice_id"],
        invoice_currency=invoice["currency"],
        invoice_status=invoice["status"],
        amount=format_amount(p.amount, p.currency),
        source=p.source,
        source_reference=p.source_reference,
    )
    if status == REJECTED_CURRENCY_MISMATCH:
        log.error("reconciliation.payment.currency_mismatch", payment_currency=p.currency, **fields)
    else:
        log.warning("reconciliation.payment.invoice_closed", **fields)
    return AllocationResult(
        status=status,
        payment_id=p.payment_id,
        invoice_ids=(invoice["invoice_id"],),
        unallocated=p.amount,
        settled=settled,
    )


async def hold_unmatched(conn: asyncpg.Connection, payment: IncomingPayment, suggestions: list[dict]) -> None:
    """Store the payment `unmatched` with its suggested candidates (the queue)."""
    p, _ = await _stored(conn, payment)
    await repo.set_suggestions(conn, p.payment_id, suggestions or None)
    log.info(
        "reconciliation.payment.unmatched",
        payment_id=p.payment_id,
        source=p.source,
        source_reference=p.source_reference,
        suggestions=len(suggestions),
    )


async def unallocate(
    conn: asyncpg.Connection, tenant_id: str, payment_id: str, allocation_id: str, *, reason: str, by: str = "api"
) -> dict:
    """Undo one allocation: its amount back on the invoice's balance (a paid invoice reopens), one
    PaymentUnallocated, the money back in the payment's unallocated amount (the queue)."""
    payment = await repo.lock_payment(conn, tenant_id, payment_id=payment_id)
    if payment is None:
        raise AllocationError("payment_id", f"no payment {payment_id!r} for this tenant", 404)
    allocation = await repo.lock_allocation(conn, tenant_id, payment_id, allocation_id)
    if allocation is None:
        raise AllocationError("allocation_id", f"no allocation {allocation_id!r} of payment {payment_id}", 404)
    if allocation["unallocated_at"] is not None:
        raise AllocationError("allocation_id", f"allocation {allocation_id} was undone before", 409)
    if allocation["amount"] <= 0:
        raise AllocationError("allocation_id", f"allocation {allocation_id} was wholly reversed", 409)
    invoice = await repo.lock_invoice(conn, tenant_id, allocation["invoice_id"])
    assert invoice is not None
    if invoice["status"] in CLOSED:
        raise AllocationError("allocation_id", f"invoice {invoice['invoice_id']} is {invoice['status']}", 409)
    currency, now = allocation["currency"], utcnow()
    balance = quantize(invoice["balance"] + allocation["amount"], currency)
    version = await repo.set_invoice_balance(conn, invoice["invoice_id"], balance, invoice_status(balance))
    await repo.mark_unallocated(conn, allocation_id, at=now, reason=reason)
    updated = await repo.update_payment(
        conn, payment_id, invoice_id=invoice["invoice_id"], balance_remaining=balance, settled=balance <= 0
    )
    await outbox.add(
        conn,
        messages.payment_unallocated(
            allocation, invoice, balance=balance, version=version, reason=reason, by=by, at=now
        ),
    )
    log.info(
        "reconciliation.allocation.undone",
        payment_id=payment_id,
        allocation_id=allocation_id,
        invoice_id=invoice["invoice_id"],
        amount=format_amount(allocation["amount"], currency),
        balance_remaining=format_amount(balance, currency),
        balance_version=version,
        by=by,
    )
    return {
        "allocation_id": allocation_id,
        "payment_id": payment_id,
        "invoice_id": invoice["invoice_id"],
        "amount": format_amount(allocation["amount"], currency),
        "balance_remaining": format_amount(balance, currency),
        "settled": balance <= 0,
        "balance_version": version,
        "payment_status": updated["status"],
        "unallocated_at": now,
    }
