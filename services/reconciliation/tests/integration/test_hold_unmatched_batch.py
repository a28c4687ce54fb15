"""allocations_batch.hold_unmatched_many (a statement's unmatched lines in one statement) leaves the
payments allocations.hold_unmatched leaves when called for each in order: new payments queued with
their suggestions, a payment already stored only given its new ones (hypothesis). And allocate_many
writes a payment's allocations in the order given, as the readers order them."""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import allocations, allocations_batch
from dunning_reconciliation.domain import Allocation, IncomingPayment, MatchKeys

pytestmark = pytest.mark.integration

CENTS = Decimal("0.01")
SUGGESTIONS = st.lists(
    st.fixed_dictionaries({"invoice_id": st.sampled_from(["inv_a", "inv_b"]), "score": st.integers(0, 100)}),
    max_size=2,
)
ITEM = st.tuples(
    st.integers(1, 99999).map(lambda n: Decimal(n) * CENTS),
    SUGGESTIONS,
    st.sampled_from([None, "Kunde 7 GmbH"]),
    st.sampled_from([None, "DE89370400440532013000"]),
    st.booleans(),  # named again later in the run (with other suggestions)
)
COLUMNS = (
    "tenant_id, invoice_id, source, status, currency, amount, amount_applied, unapplied_amount,"
    " unallocated_amount, amount_refunded, balance_remaining, settled, match_invoice_id, match_external_ids,"
    " match_numbers, received_at, acknowledged_at, applied_at, customer_id, payer_name, payer_account,"
    " remittance, creditor_reference, statement_id, suggestions, match_rule, match_reason"
)


def _payment(amount: Decimal, name: str | None, account: str | None, n: int) -> IncomingPayment:
    at = utcnow()
    return IncomingPayment(
        tenant_id="ten_test_reconciliation",
        source="bank_statement",
        source_reference=new_id("line"),
        currency="EUR",
        amount=amount,
        received_at=at,
        keys=MatchKeys.of(None, [f"INV-{n}"], [f"INV-{n}"]) if n % 2 else MatchKeys(),
        payer_name=name,
        payer_account=account,
        remittance=f"Rechnung INV-{n}",
        acknowledged_at=at,
    )


async def _world(pool, items, *, batched: bool) -> list[tuple]:
    work = []
    for n, (amount, suggestions, name, account, again) in enumerate(items):
        p = _payment(amount, name, account, n)
        work.append((p, suggestions))
        if again:
            work.append((p, [*suggestions, {"invoice_id": "inv_c", "score": n}]))
    async with pool.acquire() as conn, conn.transaction():
        await allocations.hold_unmatched(conn, work[0][0], [{"invoice_id": "inv_first"}])  # stored before the run
        if batched:
            await allocations_batch.hold_unmatched_many(conn, work)
        else:
            for p, suggestions in work:
                await allocations.hold_unmatched(conn, p, suggestions)
    ids = list(dict.fromkeys(p.payment_id for p, _ in work))
    rows = await pool.fetch(f"SELECT payment_id, {COLUMNS} FROM payments WHERE payment_id = ANY ($1::text[])", ids)
    by_id = {r["payment_id"]: tuple(r)[1:] for r in rows}
    return [by_id[i] for i in ids]


def _without_times(rows: list[tuple]) -> list[tuple]:
    return [tuple(v for k, v in zip(COLUMNS.split(", "), row, strict=True) if not k.endswith("_at")) for row in rows]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(items=st.lists(ITEM, min_size=1, max_size=8))
async def test_hold_unmatched_many_leaves_the_rows_hold_unmatched_leaves(pool, h, items):
    one_by_one = await _world(pool, items, batched=False)
    batched = await _world(pool, items, batched=True)
    assert _without_times(batched) == _without_times(one_by_one)
    assert all(row[3] == "unmatched" for row in batched)


async def test_a_payment_already_stored_keeps_its_row_and_gets_the_new_suggestions(pool, h):
    p = _payment(Decimal("12.34"), "Kunde 7 GmbH", None, 1)
    async with pool.acquire() as conn, conn.transaction():
        await allocations.hold_unmatched(conn, p, [{"invoice_id": "inv_old"}])
    async with pool.acquire() as conn, conn.transaction():
        await allocations_batch.hold_unmatched_many(conn, [(p, [{"invoice_id": "inv_new"}])])
        await allocations_batch.hold_unmatched_many(conn, [(p, [])])  # none: none kept
    row = await pool.fetchrow("SELECT amount, status, suggestions FROM payments WHERE payment_id = $1", p.payment_id)
    assert (row["amount"], row["status"], row["suggestions"]) == (Decimal("12.34"), "unmatched", None)


async def test_allocate_many_writes_a_payments_allocations_in_the_order_given(pool, h):
    """Readers (the views, reversals newest first) order a payment's allocations by (created_at,
    allocation_id); one run shares its created_at, so the ids must ascend in the order written."""
    customer, invoices = new_id("cus"), []
    for _ in range(6):
        issued = h.invoice_issued(amount_due="10.00")
        issued["data"]["customer"]["customer_id"] = customer
        await h.handle_invoice(pool, issued)
        invoices.append(issued["subject"])
    work = []
    for shift in range(3):  # three payments, each across all six invoices in its own order
        order = invoices[shift:] + invoices[:shift]
        p = _payment(Decimal("2.40"), None, None, shift)
        work.append((p, [Allocation(i, Decimal("0.40"), "reference", f"{n}") for n, i in enumerate(order)]))
    async with pool.acquire() as conn, conn.transaction():
        results = await allocations_batch.allocate_many(conn, work)
    assert [r.status for r in results] == ["applied"] * 3
    for p, wanted in work:
        rows = await pool.fetch(
            "SELECT invoice_id FROM allocations WHERE payment_id = $1 ORDER BY created_at, allocation_id",
            p.payment_id,
        )
        assert [r["invoice_id"] for r in rows] == [a.invoice_id for a in wanted]
