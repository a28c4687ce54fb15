"""`allocate_many`: the fast path of `allocations.allocate` for a run of new payments (a bank
statement's matched lines), in a few statements instead of about ten per payment (the statement
bench showed the need: one round trip per statement bounds `allocate` at a few hundred lines/s).

Same end state as calling `allocate` for each (payment, allocations) in order, held equal by
tests/integration/test_allocations_batch.py. The common case — a new payment, every invoice known,
open and in its currency, the whole amount allocated — is written set-wise: payments, allocations,
invoice balances (each change its own balance_version) and PaymentReceived events, one statement
each. Anything else (an excess that becomes credit, a payment already stored, a closed invoice, a
currency mismatch, a bad amount) goes through `allocate` itself, in its place in the order; the fast
items before it are written first and the balances read again after it.

Locks follow allocations.py's order: the customers' credit locks, then the invoices in id order (the
new payments' rows are invisible to any other transaction).
"""

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import isoformat, utcnow
from dunning.events import envelope
from dunning.ids import new_ids
from dunning.logging import get_logger
from dunning.tracing import current_traceparent
from dunning_reconciliation import messages
from dunning_reconciliation import repository as repo
from dunning_reconciliation.allocations import allocate
from dunning_reconciliation.credits import credit_lock_name
from dunning_reconciliation.domain import (
    APPLIED,
    CLOSED,
    Allocation,
    AllocationResult,
    IncomingPayment,
    invoice_status,
    quantum,
)
from dunning_reconciliation.overlap import meanwhile
from dunning_reconciliation.repository import allocations_batch as batch_repo

log = get_logger(__name__)


def _plan(p: IncomingPayment, wanted: Sequence[Allocation], invoices: dict[str, dict]) -> list[tuple] | None:
    """The allocations' takes [(allocation, invoice, take)] if the fast path fits, else None."""
    left, plan, unit = p.amount, [], quantum(p.currency)
    for a in wanted:
        invoice = invoices.get(a.invoice_id)
        if (
            invoice is None
            or invoice["status"] in CLOSED
            or invoice["currency"] != p.currency
            or a.amount <= 0
            or a.amount.quantize(unit) != a.amount
        ):
            return None
        take = max(min(a.amount, left, invoice["balance"].quantize(unit)), Decimal(0))
        plan.append((a, invoice, take))
        left -= take
    return plan if wanted and left == 0 else None


async def allocate_many(
    conn: asyncpg.Connection,
    items: Sequence[tuple[IncomingPayment, Sequence[Allocation]]],
    *,
    customers: Iterable[str] | None = None,
) -> list[AllocationResult]:
    """allocate(conn, p, allocations) for each item, in order (system allocations, excess to credit).
    `customers`: the customers of every invoice the items name, when the caller has read them already
    (matching's book: an invoice's customer does not change), so they need not be read again."""
    if not items:
        return []
    if any(p.acknowledged_at is None for p, _ in items):
        acknowledged_at = await repo.acknowledge_time(conn)
        items = [(p if p.acknowledged_at else replace(p, acknowledged_at=acknowledged_at), w) for p, w in items]
    items = [(p, list(w)) for p, w in items]
    tenant_id = items[0][0].tenant_id
    assert all(p.tenant_id == tenant_id for p, _ in items), "one tenant per run"
    invoice_ids = sorted({a.invoice_id for _, wanted in items for a in wanted})
    if customers is None:
        customers = await repo.customers_of_invoices(conn, tenant_id, invoice_ids)
    credit_holders = set(customers) | {p.customer_id for p, _ in items if p.customer_id}
    await repo.lock_names(conn, [credit_lock_name(tenant_id, c) for c in credit_holders])
    invoices = {k: dict(v) for k, v in (await repo.lock_invoices(conn, tenant_id, invoice_ids)).items()}
    stored = await repo.existing_payments(conn, [p.payment_id for p, _ in items])

    # allocation ids drawn for the whole run at once, ascending in the order written (as allocate's,
    # one round trip apart): readers order a payment's allocations by (created_at, allocation_id), and
    # one run shares its created_at
    ids = iter(sorted(new_ids("alc", sum(len(wanted) for _, wanted in items))))
    results: list[AllocationResult] = []
    fast: list[tuple] = []  # (payment, steps, first invoice id, its balance, allocations wanted)
    for p, wanted in items:
        plan = None if p.payment_id in stored else _plan(p, wanted, invoices)
        if plan is None:
            await _write(conn, fast)
            fast = []
            results.append(await allocate(conn, p, wanted))
            invoices = {k: dict(v) for k, v in (await repo.lock_invoices(conn, tenant_id, invoice_ids)).items()}
            continue
        steps = []  # (allocation id, allocation, invoice, take, balance after, version after), as allocate goes
        unit = quantum(p.currency)
        for a, invoice, take in plan:
            if take > 0:
                invoice["balance"] = invoice["balance"].quantize(unit) - take
                invoice["status"] = invoice_status(invoice["balance"])
                invoice["balance_version"] += 1
                steps.append((next(ids), a, invoice, take, invoice["balance"], invoice["balance_version"]))
        first = plan[0][1]
        fast.append((p, steps, first["invoice_id"], first["balance"], [a for a, _, _ in plan]))
        results.append(
            AllocationResult(
                status=APPLIED,
                payment_id=p.payment_id,
                allocation_ids=tuple(step[0] for step in steps),
                invoice_ids=tuple(inv["invoice_id"] for _, inv, _ in plan),
                allocated=p.amount,
                settled=first["balance"] <= 0,
            )
        )
    await _write(conn, fast)
    return results


async def _write(conn: asyncpg.Connection, fast: list[tuple]) -> None:
    """The fast items' rows and events, four statements for the run; each next one's rows built
    while PostgreSQL runs the one before (the outbox's too: outbox.outbox_rows, then add_rows)."""
    if not fast:
        return
    now = utcnow()
    created_at = now.isoformat()
    # the run's events share their time and trace context (each envelope read both again: a tenth of its cost)
    stamp, traceparent = isoformat(now), current_traceparent()
    times = (
        _Isoformats()
    )  # a run's payments share a few times (a statement's booking days, its chunk's acknowledgement)
    payments = [
        _payment_row(p, first_id, first_balance, wanted, created_at, times)
        for p, _, first_id, first_balance, wanted in fast
    ]
    rows, events, final = [], [], {}
    async with meanwhile(repo.insert_applied_payments(conn, payments)):
        for p, steps, _, _, _ in fast:
            for allocation_id, a, invoice, take, balance, version in steps:
                rows.append(
                    {
                        "allocation_id": allocation_id,
                        "tenant_id": p.tenant_id,
                        "payment_id": p.payment_id,
                        "invoice_id": invoice["invoice_id"],
                        "currency": p.currency,
                        "amount": str(take),
                        "rule": a.rule,
                        "reason": a.reason,
                        "created_at": created_at,
                    }
                )
                events.append(
                    messages.payment_received(
                        p,
                        invoice_id=invoice["invoice_id"],
                        invoice_external_id=invoice["external_id"],
                        applied=take,
                        remaining=balance,
                        settled=balance <= 0,
                        acknowledged_at=p.acknowledged_at,
                        allocation_id=allocation_id,
                        match_rule=a.rule,
                        match_reason=a.reason,
                        balance_version=version,
                    )
                )
                final[invoice["invoice_id"]] = {
                    "invoice_id": invoice["invoice_id"],
                    "balance": str(balance),
                    "status": invoice_status(balance),
                    "balance_version": version,
                }
    async with meanwhile(repo.insert_allocations(conn, rows)):
        envelopes = [envelope(e, time=stamp, traceparent=traceparent) for e in events]  # add_many's, built meanwhile
    async with meanwhile(repo.set_invoice_balances(conn, list(final.values()))):
        columns = outbox.outbox_rows(envelopes)
    await outbox.add_rows(conn, columns)
    log.info("reconciliation.payments.allocated_batch", payments=len(fast), allocations=len(rows))


class _Isoformats(dict[datetime, str]):
    """`t.isoformat()` of each time, once per distinct time (equal instants share one text: the columns
    are timestamptz)."""

    def __missing__(self, t: datetime) -> str:
        text = self[t] = t.isoformat()
        return text


def _payment_row(
    p: IncomingPayment,
    invoice_id: str,
    balance: Decimal,
    wanted: list[Allocation],
    applied_at: str,
    times: _Isoformats,
) -> dict:
    """The payment row `allocate` leaves for a wholly allocated new payment (`applied_at`: the run's
    time, in ISO form)."""
    return {
        "payment_id": p.payment_id,
        "tenant_id": p.tenant_id,
        "invoice_id": invoice_id,
        "source": p.source,
        "source_reference": p.source_reference,
        "stripe_object_id": p.stripe_object_id,
        "currency": p.currency,
        "amount": str(p.amount),
        "balance_remaining": str(balance),
        "settled": balance <= 0,
        "match_invoice_id": p.keys.invoice_id,
        "match_external_ids": list(p.keys.external_ids),
        "match_numbers": list(p.keys.numbers),
        "fingerprint": p.fingerprint,
        "received_at": times[p.received_at],
        "acknowledged_at": times[p.acknowledged_at] if p.acknowledged_at else None,
        "applied_at": applied_at,
        "customer_id": p.customer_id,
        "payer_name": p.payer_name,
        "payer_account": p.payer_account,
        "remittance": p.remittance,
        "creditor_reference": p.creditor_reference,
        "statement_id": p.statement_id,
        "match_rule": wanted[0].rule,
        "match_reason": "; ".join(dict.fromkeys(a.reason for a in wanted)),
    }


async def hold_unmatched_many(conn: asyncpg.Connection, items: Sequence[tuple[IncomingPayment, list[dict]]]) -> None:
    """allocations.hold_unmatched(conn, p, suggestions) for each item, in one statement: each payment
    stored `unmatched` with its suggestions (a payment named twice keeps its last suggestions)."""
    if not items:
        return
    missing = any(p.acknowledged_at is None for p, _ in items)
    acknowledged_at = await repo.acknowledge_time(conn) if missing else None
    rows: dict[str, dict] = {}
    times = _Isoformats()
    for p, suggestions in items:
        if p.payment_id in rows:
            rows[p.payment_id]["suggestions"] = suggestions or None
            continue
        at = p.acknowledged_at or acknowledged_at
        assert at is not None
        rows[p.payment_id] = {
            "payment_id": p.payment_id,
            "tenant_id": p.tenant_id,
            "source": p.source,
            "source_reference": p.source_reference,
            "stripe_object_id": p.stripe_object_id,
            "currency": p.currency,
            "amount": str(p.amount),
            "match_invoice_id": p.keys.invoice_id,
            "match_external_ids": list(p.keys.external_ids),
            "match_numbers": list(p.keys.numbers),
            "fingerprint": p.fingerprint,
            "received_at": times[p.received_at],
            "acknowledged_at": times[at],
            "customer_id": p.customer_id,
            "payer_name": p.payer_name,
            "payer_account": p.payer_account,
            "remittance": p.remittance,
            "creditor_reference": p.creditor_reference,
            "statement_id": p.statement_id,
            "suggestions": suggestions or None,
        }
    await batch_repo.hold_unmatched_payments(conn, list(rows.values()))
    log.info("reconciliation.payments.unmatched_batch", payments=len(rows))
