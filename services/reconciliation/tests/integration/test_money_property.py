"""Property: after any sequence of payments (partial, across invoices, over-paying), payments held in
the queue and allocated by hand, refunds, credit notes, held credit applied to a new invoice, and
allocations undone, every invoice's balance is
amount_due − its active allocations − its credit applications − its credit notes, never below zero
(open exactly while something is owed); the signed sum of the events published about it gives the
same balance, and its event with the highest balance_version states it. And every payment's money
adds up: allocated + credited + unallocated + taken back = its amount. Against real PostgreSQL."""

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dunning.clock import utcnow
from dunning.http import Problem
from dunning.ids import new_id
from dunning_reconciliation import allocations, credit_notes, money, reconcile
from dunning_reconciliation.domain import Allocation, IncomingPayment, MatchKeys, PaymentRef
from dunning_reconciliation.schemas import CreditNoteIn

pytestmark = pytest.mark.integration

D = Decimal
CENTS = D("0.01")
SIGN = {
    "dunning.PaymentReceived.v1": ("amount_applied", -1),
    "dunning.CustomerCreditApplied.v1": ("amount_applied", -1),
    "dunning.CreditNoteIssued.v1": ("amount_applied", -1),
    "dunning.PaymentUnallocated.v1": ("amount", 1),
    "dunning.PaymentReversed.v1": ("amount", 1),
}


def cents(low: int, high: int):
    return st.integers(low, high).map(lambda n: D(n) * CENTS)


OPS = st.one_of(
    st.tuples(
        st.just("pay"), st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True), cents(1, 40000), st.booleans()
    ),
    st.tuples(st.just("refund"), st.integers(0, 20), st.one_of(st.none(), cents(1, 30000))),
    st.tuples(st.just("credit_note"), st.integers(0, 9), cents(1, 20000)),
    st.tuples(st.just("unallocate"), st.integers(0, 20), st.integers(0, 5)),
    st.tuples(st.just("issue"), cents(100, 30000)),
    st.tuples(st.just("queue"), cents(1, 30000), st.one_of(st.none(), st.tuples(st.integers(0, 9), cents(1, 30000)))),
    st.tuples(st.just("manual"), st.integers(0, 20), st.integers(0, 9), cents(1, 30000)),
)


async def _issue(pool, h, customer: str, amount: Decimal, n: int) -> str:
    issued = h.invoice_issued(amount_due=str(amount), due_date=(utcnow() - timedelta(days=30 - n)).date())
    issued["data"]["customer"]["customer_id"] = customer
    await h.handle_invoice(pool, issued)
    return issued["subject"]


async def _run(pool, fn, *args, **kwargs):
    async with pool.acquire() as conn, conn.transaction():
        return await fn(conn, *args, **kwargs)


async def _step(pool, h, customer: str, invoices: list[str], payments: list[str], op: tuple) -> None:
    kind = op[0]
    if kind == "issue":
        invoices.append(await _issue(pool, h, customer, op[1], len(invoices)))
    elif kind == "pay":
        _, picks, amount, excess_to_credit = op
        targets = list(dict.fromkeys(invoices[i % len(invoices)] for i in picks))
        p = IncomingPayment(
            tenant_id=h.TENANT,
            source="bank_statement",
            source_reference=new_id("line"),
            currency="EUR",
            amount=amount,
            received_at=utcnow(),
            keys=MatchKeys(),
        )
        wanted = [Allocation(i, amount, "reference", "named in the remittance") for i in targets]
        await _run(pool, allocations.allocate, p, wanted, excess_to_credit=excess_to_credit)
        payments.append(p.payment_id)
    elif kind == "queue":  # no confident match: the payment waits in the queue
        p = IncomingPayment(
            tenant_id=h.TENANT,
            source="bank_statement",
            source_reference=new_id("line"),
            currency="EUR",
            amount=op[1],
            received_at=utcnow(),
            keys=MatchKeys(),
        )
        await _run(pool, allocations.hold_unmatched, p, [])
        payments.append(p.payment_id)
        if op[2] is not None:  # and a person allocates some of it by hand
            await _step(pool, h, customer, invoices, payments, ("manual", len(payments) - 1, *op[2]))
    elif kind == "manual" and payments:  # a person allocates what is left of a payment, by hand
        _, pick, target, amount = op
        row = await pool.fetchrow("SELECT * FROM payments WHERE payment_id = $1", payments[pick % len(payments)])
        if row["unallocated_amount"] > 0 and row["status"] in ("unmatched", "partially_allocated"):
            wanted = [Allocation(invoices[target % len(invoices)], amount, "manual", "allocated by hand")]
            await _run(
                pool,
                allocations.allocate,
                reconcile.payment_from_row(row),
                wanted,
                allocated_by="api",
                excess_to_credit=False,
            )
    elif kind == "refund" and payments:
        _, pick, amount = op
        try:
            await _run(
                pool,
                money.reverse,
                h.TENANT,
                source="api",
                source_reference=new_id("rf"),
                payment_ref=PaymentRef(payment_id=payments[pick % len(payments)]),
                amount=amount,
                kind="refund",
                reversed_at=utcnow(),
            )
        except money.ReversalError as exc:
            assert exc.field == "amount"
    elif kind == "credit_note":
        _, pick, amount = op
        body = CreditNoteIn(
            invoice_id=invoices[pick % len(invoices)],
            reference=new_id("cn"),
            amount=str(amount),
            currency="EUR",
            reason="goods returned",
        )
        try:
            await _run(pool, credit_notes.issue, credit_notes.credit_note_request(h.TENANT, body))
        except Problem as exc:
            assert exc.status == 409  # settled already
    elif kind == "unallocate" and payments:
        _, pick, which = op
        payment_id = payments[pick % len(payments)]
        active = await pool.fetch(
            "SELECT allocation_id FROM allocations WHERE payment_id = $1 AND unallocated_at IS NULL AND amount > 0"
            " ORDER BY allocation_id",
            payment_id,
        )
        if active:
            allocation_id = active[which % len(active)]["allocation_id"]
            await _run(pool, allocations.unallocate, h.TENANT, payment_id, allocation_id, reason="wrong invoice")
            event("unallocated")


async def _check_invoice(pool, h, invoice_id: str) -> None:
    row = await pool.fetchrow(
        "SELECT i.amount_due, i.balance, i.status, i.balance_version,"
        " (SELECT coalesce(sum(amount), 0) FROM allocations a WHERE a.invoice_id = i.invoice_id"
        "  AND a.unallocated_at IS NULL) AS allocated,"
        " (SELECT coalesce(sum(amount), 0) FROM credit_applications c WHERE c.invoice_id = i.invoice_id) AS credited,"
        " (SELECT coalesce(sum(amount_applied), 0) FROM credit_notes n WHERE n.invoice_id = i.invoice_id) AS noted"
        " FROM invoices i WHERE i.invoice_id = $1",
        invoice_id,
    )
    balance = row["balance"]
    assert balance == row["amount_due"] - row["allocated"] - row["credited"] - row["noted"]
    assert balance >= 0
    assert row["status"] == ("open" if balance > 0 else "paid")
    events = [e for e in await h.outbox_events(pool, invoice_id) if e["type"] in SIGN]
    signed = row["amount_due"]
    for e in events:
        field, sign = SIGN[e["type"]]
        signed += sign * D(e["data"][field])
    assert signed == balance
    versions = [e["data"]["balance_version"] for e in events]
    assert sorted(versions) == list(range(1, row["balance_version"] + 1))
    if events:
        last = max(events, key=lambda e: e["data"]["balance_version"])
        assert D(last["data"]["balance_remaining"]) == balance


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(amounts=st.lists(cents(100, 30000), min_size=1, max_size=4), ops=st.lists(OPS, min_size=1, max_size=12))
async def test_balances_agree_after_any_sequence(pool, h, amounts, ops):
    customer = new_id("cus")  # a fresh customer each example: its credit is its own
    invoices = [await _issue(pool, h, customer, amount, n) for n, amount in enumerate(amounts)]
    payments: list[str] = []
    for op in ops:
        await _step(pool, h, customer, invoices, payments, op)
    for invoice_id in invoices:
        await _check_invoice(pool, h, invoice_id)
    for p in await pool.fetch(
        "SELECT p.amount, p.amount_applied, p.unallocated_amount, p.amount_refunded, (SELECT coalesce(sum(amount), 0)"
        " FROM customer_credits c WHERE c.source_payment_id = p.payment_id) AS credited"
        " FROM payments p WHERE p.payment_id = ANY ($1::text[])",
        payments,
    ):
        assert min(p["amount_applied"], p["unallocated_amount"], p["amount_refunded"], p["credited"]) >= 0
        assert p["amount"] == p["amount_applied"] + p["credited"] + p["unallocated_amount"] + p["amount_refunded"]
