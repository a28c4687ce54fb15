"""match_service against real PostgreSQL: bank lines with no invoice key matched by their remittance,
creditor reference, the payer's known account or name, allocated (PaymentReceived per invoice, rule and
reason recorded) or held in the unmatched queue with suggestions."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import match_service
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.matching import creditor_reference_for
from dunning_reconciliation.repository import matching as match_repo

pytestmark = pytest.mark.integration

ACME = ("cus_01JD0ACME000000000000000AA", "Acme Trading GmbH")
OTHER = ("cus_01JD0OTHER00000000000000BB", "Other Corp")
IBAN = "DE89370400440532013000"


async def issue(pool, h, number: str, amount: str, *, due_days_ago: int, customer=ACME, currency="EUR") -> str:
    """An InvoiceIssued of `customer`, due `due_days_ago` days ago, applied; its invoice id."""
    envelope = h.invoice_issued(
        number=number,
        external_id=f"ACC-{number}",
        amount_due=amount,
        currency=currency,
        due_date=date.today() - timedelta(days=due_days_ago),
    )
    envelope["data"]["customer"] |= {"customer_id": customer[0], "name": customer[1]}
    await h.handle_invoice(pool, envelope)
    return envelope["subject"]


def line(h, amount: str, currency: str = "EUR", **facts) -> IncomingPayment:
    return IncomingPayment(
        tenant_id=h.TENANT,
        source="bank_statement",
        source_reference=new_id("line"),
        currency=currency,
        amount=Decimal(amount),
        received_at=utcnow(),
        keys=MatchKeys(),
        **facts,
    )


async def run(pool, *payments: IncomingPayment):
    async with pool.acquire() as conn, conn.transaction():
        return await match_service.match_and_allocate(conn, list(payments))


async def balances(pool, *invoice_ids: str) -> list[str]:
    rows = {r["invoice_id"]: r["balance"] for r in await pool.fetch("SELECT invoice_id, balance FROM invoices")}
    return [f"{rows[i]:.2f}" for i in invoice_ids]


async def allocations(pool, payment_id: str) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT invoice_id, amount, rule FROM allocations WHERE payment_id = $1 AND unallocated_at IS NULL"
        " ORDER BY created_at, allocation_id",
        payment_id,
    )
    return [(r["invoice_id"], f"{r['amount']:.2f}", r["rule"]) for r in rows]


async def test_a_remittance_naming_two_invoices_pays_both_oldest_due_first(pool, h):
    newer = await issue(pool, h, "INV-1001", "100.00", due_days_ago=5)
    older = await issue(pool, h, "INV-1004", "200.00", due_days_ago=20)
    [outcome] = await run(pool, p := line(h, "300.00", remittance="inv-1001 INV-1004 less nothing"))

    assert outcome.status == "applied"
    assert await allocations(pool, p.payment_id) == [(older, "200.00", "reference"), (newer, "100.00", "reference")]
    assert await balances(pool, newer, older) == ["0.00", "0.00"]
    events = [e["data"] for e in await h.outbox_events(pool, event_type="dunning.PaymentReceived.v1")]
    assert sorted((e["invoice_id"], e["match_rule"], e["settled"]) for e in events) == sorted(
        [(older, "reference", True), (newer, "reference", True)]
    )
    assert all("INV-1004 and INV-1001 named in the remittance" == e["match_reason"] for e in events)


async def test_a_short_payment_leaves_the_newer_invoice_partly_open(pool, h):
    newer = await issue(pool, h, "INV-1001", "100.00", due_days_ago=5)
    older = await issue(pool, h, "INV-1004", "200.00", due_days_ago=20)
    await run(pool, line(h, "250.00", remittance="INV-1001 INV-1004"))
    assert await balances(pool, older, newer) == ["0.00", "50.00"]


async def test_an_over_payment_settles_and_keeps_the_excess_off_other_invoices(pool, h):
    named = await issue(pool, h, "INV-7", "80.00", due_days_ago=3)
    [outcome] = await run(pool, p := line(h, "100.00", remittance="INV-7"))
    assert outcome.invoice_id == named and outcome.settled
    assert await balances(pool, named) == ["0.00"]
    assert await allocations(pool, p.payment_id) == [(named, "80.00", "reference")]


async def test_a_creditor_reference_names_the_invoice(pool, h):
    invoice = await issue(pool, h, "2026/0042", "75.50", due_days_ago=1)
    await issue(pool, h, "INV-9", "75.50", due_days_ago=9)
    rf = creditor_reference_for("2026/0042")
    printed = " ".join(rf[i : i + 4] for i in range(0, len(rf), 4))
    [outcome] = await run(pool, p := line(h, "75.50", remittance=f"Zahlung {printed}"))
    assert (outcome.invoice_id, await allocations(pool, p.payment_id)) == (
        invoice,
        [(invoice, "75.50", "creditor_reference")],
    )


async def test_no_reference_waits_in_the_queue_with_suggestions(pool, h):
    equal = await issue(pool, h, "INV-1", "120.00", due_days_ago=10)
    await issue(pool, h, "INV-2", "99.00", due_days_ago=10, customer=OTHER)
    [outcome] = await run(pool, p := line(h, "120.00", remittance="thank you", payer_name="Someone"))

    assert outcome.status == "unmatched"
    row = await pool.fetchrow("SELECT status, suggestions FROM payments WHERE payment_id = $1", p.payment_id)
    assert row["status"] == "unmatched"
    assert [s["invoice_id"] for s in row["suggestions"]] == [equal]
    assert await balances(pool, equal) == ["120.00"]
    assert await h.outbox_events(pool, event_type="dunning.PaymentReceived.v1") == []


async def test_a_known_payer_account_matches_an_exact_amount_then_an_exact_sum(pool, h):
    a1 = await issue(pool, h, "A-1", "40.00", due_days_ago=30)
    a2 = await issue(pool, h, "A-2", "60.00", due_days_ago=20)
    a3 = await issue(pool, h, "A-3", "25.00", due_days_ago=10)
    await issue(pool, h, "B-1", "60.00", due_days_ago=40, customer=OTHER)
    await match_repo.learn_payer_account(pool, h.TENANT, IBAN, ACME[0], new_id("pay"))

    first, second = await run(
        pool, line(h, "60.00", payer_account="de89 3704 0044 0532 0130 00"), line(h, "65.00", payer_account=IBAN)
    )

    assert await allocations(pool, first.payment_id) == [(a2, "60.00", "payer_account_amount")]
    assert await allocations(pool, second.payment_id) == [(a1, "40.00", "customer_sum"), (a3, "25.00", "customer_sum")]


async def test_two_lines_of_a_batch_cannot_take_the_same_open_amount(pool, h):
    only = await issue(pool, h, "A-1", "40.00", due_days_ago=30)
    await match_repo.learn_payer_account(pool, h.TENANT, IBAN, ACME[0], new_id("pay"))
    first, second = await run(pool, line(h, "40.00", payer_account=IBAN), line(h, "40.00", payer_account=IBAN))
    assert (first.status, first.invoice_id, second.status) == ("applied", only, "unmatched")


async def test_the_payer_name_names_a_unique_customer(pool, h):
    invoice = await issue(pool, h, "A-1", "40.00", due_days_ago=30)
    [outcome] = await run(pool, p := line(h, "40.00", payer_name="ACME  trading gmbh"))
    assert await allocations(pool, p.payment_id) == [(invoice, "40.00", "customer_amount")]
    assert outcome.settled


@pytest.mark.parametrize(
    "payment",
    [
        pytest.param({"currency": "USD", "remittance": "INV-1"}, id="other-currency"),
        pytest.param({"remittance": "INV-PAID"}, id="invoice-not-open"),
    ],
)
async def test_only_open_invoices_in_the_payments_currency_are_matched(pool, h, payment):
    await issue(pool, h, "INV-1", "10.00", due_days_ago=1)
    paid = await issue(pool, h, "INV-PAID", "10.00", due_days_ago=1)
    await run(pool, line(h, "10.00", remittance="INV-PAID"))
    assert await balances(pool, paid) == ["0.00"]
    [outcome] = await run(pool, line(h, "10.00", **payment))
    assert outcome.status == "unmatched"


async def test_a_line_naming_an_invoice_not_yet_issued_is_matched_when_it_is(pool, h):
    [outcome] = await run(pool, p := line(h, "70.00", remittance="Rechnung INV-2044 danke"))
    assert outcome.status == "unmatched"

    invoice = await issue(pool, h, "INV-2044", "70.00", due_days_ago=1)

    assert await allocations(pool, p.payment_id) == [(invoice, "70.00", "late_match")]
    assert await balances(pool, invoice) == ["0.00"]


async def test_the_candidates_of_an_amount_are_its_ten_oldest_open_invoices_in_its_currency(pool, h):
    """The queue's suggestions read open balances equal to an amount by a join (no index names the
    balance, so balance updates stay HOT): at most ten per amount, the oldest due first, open only."""
    ids = [await issue(pool, h, f"INV-20{n:02d}", "42.00", due_days_ago=n) for n in range(12)]
    other_currency = await issue(pool, h, "INV-2099", "42.00", due_days_ago=99, currency="USD")
    paid = await issue(pool, h, "INV-2098", "42.00", due_days_ago=98)
    await run(pool, line(h, "42.00", remittance="INV-2098"))
    await issue(pool, h, "INV-2097", "43.00", due_days_ago=97)

    async with pool.acquire() as conn:
        rows = await match_repo.candidates(conn, h.TENANT, amounts=[("EUR", Decimal("42.00"))])
    found = {r["invoice_id"] for r in rows}

    assert found == set(ids[2:])  # the ten due longest ago (12 days ago .. 2 days ago)
    assert other_currency not in found and paid not in found
