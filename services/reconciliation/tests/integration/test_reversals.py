"""Money taken back (money.reverse) and money whose fate is open (money.pending, pending_ended),
against real PostgreSQL: a refund reopens a paid invoice, is counted once per source reference, is
taken from unallocated money and credit before allocations (newest first), and is refused beyond
what is left; a processing debit is not counted until it succeeds; a lost chargeback reverses."""

from datetime import timedelta
from decimal import Decimal

import pytest

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import allocations, money
from dunning_reconciliation.domain import Allocation, IncomingPayment, MatchKeys, PaymentRef

pytestmark = pytest.mark.integration

D = Decimal


async def issue(pool, h, amount: str, *, customer_id: str, due_days_ago: int = 0) -> str:
    issued = h.invoice_issued(amount_due=amount, due_date=(utcnow() - timedelta(days=due_days_ago)).date())
    issued["data"]["customer"]["customer_id"] = customer_id
    await h.handle_invoice(pool, issued)
    return issued["subject"]


def payment(h, amount: str, *, source: str = "gocardless", invoice_id: str | None = None) -> IncomingPayment:
    return IncomingPayment(
        tenant_id=h.TENANT,
        source=source,
        source_reference=new_id("PM"),
        currency="EUR",
        amount=D(amount),
        received_at=utcnow(),
        keys=MatchKeys.of(invoice_id),
    )


async def run(pool, fn, *args, **kwargs):
    async with pool.acquire() as conn, conn.transaction():
        return await fn(conn, *args, **kwargs)


async def state(pool, invoice_id: str) -> tuple:
    row = await pool.fetchrow("SELECT balance, status, balance_version FROM invoices WHERE invoice_id = $1", invoice_id)
    return row["balance"], row["status"], row["balance_version"]


async def refund(pool, h, payment_id: str, amount: str | None, reference: str | None = None):
    return await run(
        pool,
        money.reverse,
        h.TENANT,
        source="gocardless",
        source_reference=reference or new_id("RF"),
        payment_ref=PaymentRef(payment_id=payment_id),
        amount=None if amount is None else D(amount),
        kind="refund",
        reversed_at=utcnow(),
    )


async def paid_invoice(pool, h, amount: str = "100.00") -> tuple[str, str]:
    invoice = await issue(pool, h, amount, customer_id=new_id("cus"))
    result = await run(
        pool, allocations.allocate, payment(h, amount), [Allocation(invoice, D(amount), "metadata", "named")]
    )
    return invoice, result.payment_id


async def test_a_refund_reopens_a_paid_invoice_once_per_reference(pool, h):
    invoice, payment_id = await paid_invoice(pool, h)
    first = await refund(pool, h, payment_id, "40.00", reference="RF-1")
    assert (first.amount, first.invoice_ids, first.replayed) == (40, (invoice,), False)
    assert await state(pool, invoice) == (40, "open", 2)
    received, reversed_ = await h.outbox_events(pool, invoice)
    assert reversed_["type"] == "dunning.PaymentReversed.v1"
    data = reversed_["data"]
    assert (data["kind"], data["amount"], data["balance_remaining"], data["settled"], data["balance_version"]) == (
        "refund",
        "40.00",
        "40.00",
        False,
        2,
    )
    assert (data["source_reference"], data["reversal_id"]) == ("RF-1", first.reversal_id)

    again = await refund(pool, h, payment_id, "40.00", reference="RF-1")
    assert again.replayed and again.reversal_id == first.reversal_id
    assert len(await h.outbox_events(pool, invoice)) == 2 and await state(pool, invoice) == (40, "open", 2)
    row = await pool.fetchrow("SELECT status, amount_refunded, amount_applied FROM payments")
    assert tuple(row) == ("applied", 40, 60)

    rest = await refund(pool, h, payment_id, None)  # all that is left
    assert rest.amount == 60 and await state(pool, invoice) == (100, "open", 3)
    assert await pool.fetchval("SELECT status FROM payments") == "reversed"


async def test_a_refund_beyond_what_is_left_is_refused_and_changes_nothing(pool, h):
    invoice, payment_id = await paid_invoice(pool, h)
    await refund(pool, h, payment_id, "70.00")
    for amount in ("30.01", "0", "1.001"):
        with pytest.raises(money.ReversalError) as caught:
            await refund(pool, h, payment_id, amount)
        assert caught.value.field == "amount"
    assert await state(pool, invoice) == (70, "open", 2)
    assert await pool.fetchval("SELECT count(*) FROM reversals") == 1
    with pytest.raises(money.ReversalError) as unknown:
        await refund(pool, h, "pay_unknown0000000", "1.00")
    assert (unknown.value.field, unknown.value.status) == ("payment", 404)


async def test_a_refund_takes_the_unallocated_money_then_the_credit_then_the_newest_allocation(pool, h):
    customer = new_id("cus")
    old = await issue(pool, h, "50.00", customer_id=customer, due_days_ago=9)
    new = await issue(pool, h, "30.00", customer_id=customer, due_days_ago=1)
    p = payment(h, "100.00")
    result = await run(
        pool,
        allocations.allocate,
        p,
        [Allocation(old, D("50.00"), "reference", "named"), Allocation(new, D("30.00"), "reference", "named")],
    )
    assert result.credited == 20  # held: the customer has no other open invoice

    await refund(pool, h, p.payment_id, "20.00")  # all of the credit, no invoice touched
    assert await state(pool, old) == (0, "paid", 1) and await state(pool, new) == (0, "paid", 1)
    assert await pool.fetchval("SELECT remaining FROM customer_credits") == 0

    await refund(pool, h, p.payment_id, "40.00")  # 30 from the newest allocation, then 10 from the older
    assert await state(pool, new) == (30, "open", 2) and await state(pool, old) == (10, "open", 2)
    parts = await pool.fetch(
        "SELECT invoice_id, amount FROM reversal_parts WHERE invoice_id IS NOT NULL ORDER BY amount"
    )
    assert [(r["invoice_id"], r["amount"]) for r in parts] == [(old, 10), (new, 30)]
    assert await pool.fetchval("SELECT amount FROM allocations WHERE invoice_id = $1", new) == 0


async def test_a_processing_debit_pauses_without_counting_then_succeeds(pool, h):
    invoice = await issue(pool, h, "100.00", customer_id=new_id("cus"))
    p = payment(h, "100.00", invoice_id=invoice)
    outcome = await run(pool, money.pending, p, "processing")
    assert (outcome.status, outcome.invoice_id) == ("processing", invoice)
    assert await state(pool, invoice) == (100, "open", 0)
    [paused] = await h.outbox_events(pool, invoice)
    assert paused["type"] == "dunning.PaymentPending.v1" and paused["data"]["kind"] == "processing"

    ended = await run(
        pool,
        money.pending_ended,
        h.TENANT,
        payment_ref=PaymentRef(source="gocardless", source_reference=p.source_reference),
        kind="processing",
        outcome="succeeded",
        source_reference="EV1",
        ended_at=utcnow(),
    )
    assert (ended.status, ended.invoice_id, ended.settled) == ("applied", invoice, True)
    types = [e["type"] for e in await h.outbox_events(pool, invoice)]
    assert types == ["dunning.PaymentPending.v1", "dunning.PaymentPendingEnded.v1", "dunning.PaymentReceived.v1"]
    assert await state(pool, invoice) == (0, "paid", 1)


async def test_a_processing_debit_that_fails_is_never_counted(pool, h):
    invoice = await issue(pool, h, "100.00", customer_id=new_id("cus"))
    p = payment(h, "100.00", invoice_id=invoice)
    await run(pool, money.pending, p, "processing")
    ended = await run(
        pool,
        money.pending_ended,
        h.TENANT,
        payment_ref=PaymentRef(payment_id=p.payment_id),
        kind="processing",
        outcome="failed",
        source_reference="EV2",
        ended_at=utcnow(),
    )
    assert ended.status == "failed" and await state(pool, invoice) == (100, "open", 0)
    [_, end] = await h.outbox_events(pool, invoice)
    assert (end["type"], end["data"]["outcome"]) == ("dunning.PaymentPendingEnded.v1", "failed")
    with pytest.raises(allocations.AllocationError):
        await run(pool, allocations.allocate, p, [Allocation(invoice, D("1.00"), "manual", "x")], allocated_by="api")


@pytest.mark.parametrize(("outcome", "balance"), [("won", 0), ("lost", 100)])
async def test_a_chargeback_pauses_then_ends(pool, h, outcome, balance):
    invoice, payment_id = await paid_invoice(pool, h)
    ref = PaymentRef(payment_id=payment_id)
    disputed = IncomingPayment(
        tenant_id=h.TENANT,
        source="gocardless",
        source_reference="DSP-1",
        currency="EUR",
        amount=D("100.00"),
        received_at=utcnow(),
        keys=MatchKeys(),
        payment_id=payment_id,
    )
    await run(pool, money.pending, disputed, "chargeback", payment_ref=ref)
    await run(
        pool,
        money.pending_ended,
        h.TENANT,
        payment_ref=ref,
        kind="chargeback",
        outcome=outcome,
        source_reference="DSP-1",
        ended_at=utcnow(),
    )
    events = await h.outbox_events(pool, invoice)
    types = [e["type"].split(".")[1] for e in events]
    expected = ["PaymentReceived", "PaymentPending", "PaymentPendingEnded"] + (
        ["PaymentReversed"] if outcome == "lost" else []
    )
    assert types == expected
    assert events[1]["data"]["kind"] == "chargeback" and events[2]["data"]["outcome"] == outcome
    assert (await state(pool, invoice))[0] == balance


async def test_refunds_racing_over_payments_of_the_same_customer_keep_the_money_right(pool, h):
    """Concurrent refunds of one payment and over-payments (credit applied to the same customer's
    invoices): no deadlock, nothing counted twice, every balance as the allocations say."""
    import asyncio

    customer = new_id("cus")
    invoices = [await issue(pool, h, "100.00", customer_id=customer, due_days_ago=9 - n) for n in range(6)]
    first = payment(h, "150.00")
    await run(pool, allocations.allocate, first, [Allocation(invoices[0], D("150.00"), "reference", "named")])

    async def over_pay(n: int) -> None:
        p = payment(h, "60.00")
        await run(pool, allocations.allocate, p, [Allocation(invoices[1 + n % 5], D("60.00"), "reference", "named")])

    refunds = [refund(pool, h, first.payment_id, "10.00") for _ in range(8)]
    await asyncio.gather(*refunds, *(over_pay(n) for n in range(8)))

    assert await pool.fetchval("SELECT amount_refunded FROM payments WHERE payment_id = $1", first.payment_id) == 80
    for invoice_id in invoices:
        row = await pool.fetchrow(
            "SELECT i.amount_due - i.balance AS paid,"
            " (SELECT coalesce(sum(amount), 0) FROM allocations a WHERE a.invoice_id = i.invoice_id"
            "  AND a.unallocated_at IS NULL)"
            " + (SELECT coalesce(sum(amount), 0) FROM credit_applications c WHERE c.invoice_id = i.invoice_id) AS money"
            " FROM invoices i WHERE invoice_id = $1",
            invoice_id,
        )
        assert row["paid"] == row["money"]


async def test_money_taken_back_from_a_voided_invoice_leaves_it_closed(pool, h):
    issued = h.invoice_issued(amount_due="100.00")
    await h.handle_invoice(pool, issued)
    invoice = issued["subject"]
    p = payment(h, "60.00")
    result = await run(pool, allocations.allocate, p, [Allocation(invoice, D("60.00"), "metadata", "named")])
    assert await h.apply(pool, h.invoice_voided(issued, 2))

    with pytest.raises(allocations.AllocationError) as caught:
        await run(pool, allocations.unallocate, h.TENANT, p.payment_id, result.allocation_ids[0], reason="x")
    assert (caught.value.field, caught.value.status) == ("allocation_id", 409)
    refunded = await refund(pool, h, p.payment_id, "60.00")
    assert refunded.amount == 60
    assert await state(pool, invoice) == (0, "void", 1)
    assert [e["type"] for e in await h.outbox_events(pool, invoice)] == ["dunning.PaymentReceived.v1"]
    assert await pool.fetchval("SELECT status FROM payments") == "reversed"
