"""The money core against real PostgreSQL: a payment allocated across invoices (one PaymentReceived
each, with its allocation, rule, reason and balance version), capped at the open balance, an excess
that becomes customer credit applied to the customer's oldest open invoice, and an allocation undone
by hand that reopens its invoice."""

from datetime import timedelta
from decimal import Decimal

import pytest

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import allocations
from dunning_reconciliation.domain import Allocation, IncomingPayment, MatchKeys

pytestmark = pytest.mark.integration

D = Decimal


async def issue(pool, h, amount: str, *, customer_id: str, due_days_ago: int = 0, currency: str = "EUR") -> str:
    """An invoice of `customer_id` through the InvoiceIssued handler; returns its id."""
    issued = h.invoice_issued(
        amount_due=amount, currency=currency, due_date=(utcnow() - timedelta(days=due_days_ago)).date()
    )
    issued["data"]["customer"]["customer_id"] = customer_id
    await h.handle_invoice(pool, issued)
    return issued["subject"]


def bank_payment(h, amount: str, *, currency: str = "EUR", customer_id: str | None = None) -> IncomingPayment:
    return IncomingPayment(
        tenant_id=h.TENANT,
        source="bank_statement",
        source_reference=new_id("line"),
        currency=currency,
        amount=D(amount),
        received_at=utcnow(),
        keys=MatchKeys(),
        payer_name="Brandt & Söhne GmbH",
        payer_account="DE89370400440532013000",
        remittance="INV-1 INV-2",
        customer_id=customer_id,
    )


async def run(pool, fn, *args, **kwargs):
    async with pool.acquire() as conn, conn.transaction():
        return await fn(conn, *args, **kwargs)


async def balance(pool, invoice_id: str) -> tuple:
    row = await pool.fetchrow("SELECT balance, status, balance_version FROM invoices WHERE invoice_id = $1", invoice_id)
    return row["balance"], row["status"], row["balance_version"]


async def test_a_payment_across_two_invoices_is_one_allocation_and_one_event_each(pool, h):
    customer = new_id("cus")
    first = await issue(pool, h, "120.00", customer_id=customer, due_days_ago=30)
    second = await issue(pool, h, "80.00", customer_id=customer, due_days_ago=10)
    p = bank_payment(h, "200.00")
    reason = "INV-1 and INV-2 named in the remittance"
    result = await run(
        pool,
        allocations.allocate,
        p,
        [Allocation(first, D("120.00"), "reference", reason), Allocation(second, D("80.00"), "reference", reason)],
    )

    assert (result.status, result.allocated, result.credited, result.unallocated) == ("applied", 200, 0, 0)
    assert await balance(pool, first) == (0, "paid", 1) and await balance(pool, second) == (0, "paid", 1)
    for invoice_id, applied in ((first, "120.00"), (second, "80.00")):
        [event] = await h.outbox_events(pool, invoice_id)
        data = event["data"]
        assert event["type"] == "dunning.PaymentReceived.v1"
        assert (data["amount"], data["amount_applied"], data["balance_remaining"], data["settled"]) == (
            "200.00",
            applied,
            "0.00",
            True,
        )
        assert (data["source"], data["match_rule"], data["match_reason"], data["balance_version"]) == (
            "bank_statement",
            "reference",
            reason,
            1,
        )
        assert data["allocation_id"] in result.allocation_ids
    row = await pool.fetchrow(
        "SELECT status, amount_applied, unallocated_amount, payer_account, match_rule FROM payments"
    )
    assert tuple(row) == ("applied", 200, 0, "DE89370400440532013000", "reference")


async def test_a_short_payment_leaves_a_balance_and_an_allocation_is_capped_at_it(pool, h):
    customer = new_id("cus")
    invoice = await issue(pool, h, "100.00", customer_id=customer)
    short = await run(
        pool, allocations.allocate, bank_payment(h, "40.00"), [Allocation(invoice, D("40.00"), "reference", "named")]
    )
    assert short.status == "applied" and await balance(pool, invoice) == (60, "open", 1)

    capped = await run(
        pool,
        allocations.allocate,
        bank_payment(h, "90.00"),
        [Allocation(invoice, D("90.00"), "reference", "named")],
        excess_to_credit=False,
    )
    assert (capped.status, capped.allocated, capped.unallocated, capped.credited) == ("partially_allocated", 60, 30, 0)
    assert await balance(pool, invoice) == (0, "paid", 2)
    events = await h.outbox_events(pool, invoice)
    assert [(e["data"]["amount_applied"], e["data"]["balance_version"]) for e in events] == [("40.00", 1), ("60.00", 2)]


async def test_an_excess_becomes_credit_applied_to_the_oldest_open_invoice_then_held_for_the_next(pool, h, client):
    customer = new_id("cus")
    paid = await issue(pool, h, "100.00", customer_id=customer, due_days_ago=20)
    newer = await issue(pool, h, "50.00", customer_id=customer, due_days_ago=1)
    older = await issue(pool, h, "30.00", customer_id=customer, due_days_ago=10)
    result = await run(
        pool, allocations.allocate, bank_payment(h, "200.00"), [Allocation(paid, D("200.00"), "reference", "named")]
    )

    # 100 excess: 30 to the older open invoice, 50 to the newer, 20 held
    assert (result.status, result.credited, result.unallocated) == ("applied", 100, 0)
    assert await balance(pool, older) == (0, "paid", 1) and await balance(pool, newer) == (0, "paid", 1)
    [applied_older] = await h.outbox_events(pool, older)
    assert applied_older["type"] == "dunning.CustomerCreditApplied.v1"
    assert (applied_older["data"]["amount_applied"], applied_older["data"]["credit_remaining"]) == ("30.00", "70.00")
    [applied_newer] = await h.outbox_events(pool, newer)
    assert (applied_newer["data"]["amount_applied"], applied_newer["data"]["credit_remaining"]) == ("50.00", "20.00")

    later = await issue(pool, h, "15.00", customer_id=customer)  # the held credit pays the next invoice
    assert await balance(pool, later) == (0, "paid", 1)
    shown = await client.get(f"/v1/customers/{customer}/credit", headers=h.AUTH)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["balances"] == [{"currency": "EUR", "count": 1, "amount": "5.00"}]
    [credit] = body["credits"]
    assert (credit["amount"], credit["remaining"], credit["source_payment_id"]) == ("100.00", "5.00", result.payment_id)
    assert [a["invoice_id"] for a in credit["applications"]] == [older, newer, later]


async def test_a_held_credit_pays_invoices_issued_in_a_batch_as_one_by_one(pool, h):
    from dunning.events import decode, dumps
    from dunning_reconciliation.invoice_batch import on_invoices_issued

    customer = new_id("cus")
    paid = await issue(pool, h, "10.00", customer_id=customer)
    await run(
        pool, allocations.allocate, bank_payment(h, "50.00"), [Allocation(paid, D("50.00"), "reference", "named")]
    )
    envelopes = []
    for amount in ("25.00", "25.00", "25.00"):
        e = h.invoice_issued(amount_due=amount)
        e["data"]["customer"]["customer_id"] = customer
        envelopes.append(e)
    await run(pool, on_invoices_issued, [decode(dumps(e)) for e in envelopes])
    assert [await balance(pool, e["subject"]) for e in envelopes] == [(0, "paid", 1), (10, "open", 1), (25, "open", 0)]


async def test_undoing_an_allocation_reopens_the_invoice_and_returns_the_money_to_the_queue(pool, h):
    customer = new_id("cus")
    invoice = await issue(pool, h, "100.00", customer_id=customer)
    result = await run(
        pool,
        allocations.allocate,
        bank_payment(h, "100.00"),
        [Allocation(invoice, D("100.00"), "manual", "by hand")],
        allocated_by="api",
    )
    [allocation_id] = result.allocation_ids
    undone = await run(
        pool, allocations.unallocate, h.TENANT, result.payment_id, allocation_id, reason="wrong customer"
    )

    assert (undone["payment_status"], undone["balance_remaining"], undone["balance_version"]) == (
        "unmatched",
        "100.00",
        2,
    )
    assert await balance(pool, invoice) == (100, "open", 2)
    received, unallocated = await h.outbox_events(pool, invoice)
    assert unallocated["type"] == "dunning.PaymentUnallocated.v1"
    assert (unallocated["data"]["amount"], unallocated["data"]["settled"], unallocated["data"]["reason"]) == (
        "100.00",
        False,
        "wrong customer",
    )
    row = await pool.fetchrow(
        "SELECT status, amount_applied, unallocated_amount FROM payments WHERE payment_id = $1", result.payment_id
    )
    assert tuple(row) == ("unmatched", 0, 100)

    with pytest.raises(allocations.AllocationError) as again:
        await run(pool, allocations.unallocate, h.TENANT, result.payment_id, allocation_id, reason="twice")
    assert (again.value.field, again.value.status) == ("allocation_id", 409)


@pytest.mark.parametrize(
    ("allocated_by", "raises"),
    [pytest.param("api", True, id="by-hand-refused"), pytest.param("system", False, id="matched-recorded-rejected")],
)
async def test_a_currency_mismatch(pool, h, allocated_by, raises):
    invoice = await issue(pool, h, "100.00", customer_id=new_id("cus"))
    p = bank_payment(h, "100.00", currency="USD")
    wanted = [Allocation(invoice, D("100.00"), "reference", "named")]
    if raises:
        with pytest.raises(allocations.CurrencyMismatch) as caught:
            await run(pool, allocations.allocate, p, wanted, allocated_by=allocated_by)
        assert caught.value.field == "currency"
        assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    else:
        result = await run(pool, allocations.allocate, p, wanted, allocated_by=allocated_by)
        assert result.status == "rejected_currency_mismatch"
    assert await balance(pool, invoice) == (100, "open", 0)
    assert await h.outbox_events(pool, invoice) == []


async def test_bad_allocations_change_nothing(pool, h):
    invoice = await issue(pool, h, "100.00", customer_id=new_id("cus"))
    for wanted, field in (
        ([Allocation(invoice, D("0"), "manual", "x")], "amount"),
        ([Allocation(invoice, D("1.001"), "manual", "x")], "amount"),
        ([Allocation("inv_unknown000000", D("1"), "manual", "x")], "invoice_id"),
    ):
        with pytest.raises(allocations.AllocationError) as caught:
            await run(pool, allocations.allocate, bank_payment(h, "10.00"), wanted, allocated_by="api")
        assert caught.value.field == field
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await balance(pool, invoice) == (100, "open", 0)


async def test_hold_unmatched_keeps_the_suggestions(pool, h):
    p = bank_payment(h, "10.00")
    await run(pool, allocations.hold_unmatched, p, [{"invoice_id": "inv_x", "reason": "same amount"}])
    row = await pool.fetchrow("SELECT status, unallocated_amount, suggestions FROM payments")
    assert (row["status"], row["unallocated_amount"]) == ("unmatched", 10)
    assert row["suggestions"] == [{"invoice_id": "inv_x", "reason": "same amount"}]


async def test_an_api_over_payment_answers_its_allocation_and_its_credit(pool, h, client):
    customer = new_id("cus")
    invoice = await issue(pool, h, "100.00", customer_id=customer, due_days_ago=5)
    other = await issue(pool, h, "30.00", customer_id=customer)
    body = {
        "invoice_id": invoice,
        "amount": "150.00",
        "currency": "EUR",
        "received_at": utcnow().isoformat(),
        "reference": "RCPT-OVER-1",
    }
    response = await client.post("/v1/payments", json=body, headers=h.AUTH)
    assert response.status_code == 201, response.text
    view = response.json()
    assert (view["status"], view["amount_allocated"], view["credited_amount"], view["unallocated_amount"]) == (
        "applied",
        "100.00",
        "50.00",
        "0.00",
    )
    [allocation] = view["allocations"]
    assert (allocation["invoice_id"], allocation["amount"], allocation["rule"]) == (invoice, "100.00", "api")
    credit = view["credit"]
    assert (credit["amount"], credit["remaining"]) == ("50.00", "20.00")
    assert [(a["invoice_id"], a["amount"]) for a in credit["applications"]] == [(other, "30.00")]
    again = await client.post("/v1/payments", json=body, headers=h.AUTH)
    assert again.status_code == 200 and again.json() == view
