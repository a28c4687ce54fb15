"""allocations_batch.allocate_many (the fast path of a statement's matched lines) leaves the same
state as allocations.allocate called for each payment in order: invoices, payments, allocations,
customer credit and the events, for random runs of exact, short, split, over- and mis-currency
payments (hypothesis). Two worlds in one schema, each with its own customer and invoices.

Both paths leave no allocation or payment pointing at nothing, and refuse an allocation to an
invoice the tenant does not have (another tenant's: no foreign key sees that) with nothing written."""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning import tenancy
from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import allocations, allocations_batch
from dunning_reconciliation.allocations import AllocationError
from dunning_reconciliation.domain import Allocation, IncomingPayment, MatchKeys

pytestmark = pytest.mark.integration

CENTS = Decimal("0.01")
ITEM = st.tuples(
    st.integers(1, 30000).map(lambda n: Decimal(n) * CENTS),
    st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True),
    st.sampled_from(["EUR"] * 9 + ["USD"]),
)


async def _world(pool, h, amounts, items, *, batched: bool) -> dict:
    customer = new_id("cus")
    invoices = []
    for amount in amounts:
        issued = h.invoice_issued(amount_due=str(amount))
        issued["data"]["customer"]["customer_id"] = customer
        await h.handle_invoice(pool, issued)
        invoices.append(issued["subject"])
    work = []
    for amount, picks, currency in items:
        p = IncomingPayment(
            tenant_id=h.TENANT,
            source="bank_statement",
            source_reference=new_id("line"),
            currency=currency,
            amount=amount,
            received_at=utcnow(),
            keys=MatchKeys(),
            remittance="INV",
        )
        targets = list(dict.fromkeys(invoices[i % len(invoices)] for i in picks))
        work.append((p, [Allocation(i, amount, "reference", f"named {n}") for n, i in enumerate(targets)]))
    async with pool.acquire() as conn, conn.transaction():
        if batched:
            results = await allocations_batch.allocate_many(conn, work)
        else:
            results = [await allocations.allocate(conn, p, w) for p, w in work]
    return await _state(pool, h, invoices, [p.payment_id for p, _ in work], results)


_ORPHANS = (
    "SELECT (SELECT count(*) FROM allocations a WHERE NOT EXISTS (SELECT 1 FROM payments p"
    " WHERE p.payment_id = a.payment_id AND p.tenant_id = a.tenant_id))"
    " + (SELECT count(*) FROM allocations a WHERE NOT EXISTS (SELECT 1 FROM invoices i"
    " WHERE i.invoice_id = a.invoice_id AND i.tenant_id = a.tenant_id))"
    " + (SELECT count(*) FROM payments p WHERE p.invoice_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM invoices i"
    " WHERE i.invoice_id = p.invoice_id AND i.tenant_id = p.tenant_id))"
)


async def _state(pool, h, invoices: list[str], payments: list[str], results) -> dict:
    """Everything the two paths must agree on, with ids replaced by positions."""
    name = {i: f"i{n}" for n, i in enumerate(invoices)} | {p: f"p{n}" for n, p in enumerate(payments)}
    rows = await pool.fetch(
        "SELECT invoice_id, balance, status, balance_version FROM invoices WHERE invoice_id = ANY ($1::text[])",
        invoices,
    )
    state = {"invoices": sorted((name[r["invoice_id"]], r["balance"], r["status"], r["balance_version"]) for r in rows)}
    rows = await pool.fetch(
        "SELECT payment_id, invoice_id, status, amount_applied, unapplied_amount, unallocated_amount,"
        " balance_remaining, settled, match_rule, match_reason FROM payments WHERE payment_id = ANY ($1::text[])",
        payments,
    )
    state["payments"] = sorted((name[r[0]], name.get(r[1]), *tuple(r)[2:]) for r in rows)
    rows = await pool.fetch(
        "SELECT payment_id, invoice_id, amount, rule, reason, allocated_by FROM allocations"
        " WHERE payment_id = ANY ($1::text[])",
        payments,
    )
    state["allocations"] = sorted((name[r[0]], name[r[1]], *tuple(r)[2:]) for r in rows)
    rows = await pool.fetch(
        "SELECT c.source_payment_id, c.amount, c.remaining, a.invoice_id, a.amount AS applied"
        " FROM customer_credits c LEFT JOIN credit_applications a USING (credit_id)"
        " WHERE c.source_payment_id = ANY ($1::text[])",
        payments,
    )
    state["credits"] = sorted((name[r[0]], r[1], r[2], name.get(r[3]), r[4]) for r in rows)
    events = []
    for invoice_id in invoices:
        for e in await h.outbox_events(pool, invoice_id):
            d = e["data"]
            events.append(
                (
                    name[invoice_id],
                    e["type"],
                    d.get("amount_applied"),
                    d["balance_remaining"],
                    d["balance_version"],
                    d.get("match_reason"),
                    name.get(d.get("payment_id") or d.get("source_payment_id")),
                )
            )
    state["events"] = events
    state["results"] = [
        (
            r.status,
            r.allocated,
            r.credited,
            r.unallocated,
            r.settled,
            len(r.allocation_ids),
            [name.get(i) for i in r.invoice_ids],
        )
        for r in results
    ]
    return state


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    amounts=st.lists(st.integers(100, 30000).map(lambda n: Decimal(n) * CENTS), min_size=1, max_size=6),
    items=st.lists(ITEM, min_size=1, max_size=10),
)
async def test_allocate_many_leaves_the_state_allocate_leaves(pool, h, amounts, items):
    one_by_one = await _world(pool, h, amounts, items, batched=False)
    batched = await _world(pool, h, amounts, items, batched=True)
    assert batched == one_by_one
    assert await pool.fetchval(_ORPHANS) == 0


def _line(h, amount: str) -> IncomingPayment:
    return IncomingPayment(
        tenant_id=h.TENANT,
        source="bank_statement",
        source_reference=new_id("line"),
        currency="EUR",
        amount=Decimal(amount),
        received_at=utcnow(),
        keys=MatchKeys(),
    )


@pytest.mark.parametrize(
    "unknown",
    [
        pytest.param("inv_unknown0000000000000000", id="no such invoice"),
        pytest.param("other tenant's", id="another tenant's invoice"),
    ],
)
async def test_an_allocation_to_an_invoice_the_tenant_lacks_is_refused_and_the_run_writes_nothing(pool, h, unknown):
    """Refused by the writers, whoever the invoice belongs to: the run's exact payments before it are
    not written either (one transaction)."""
    known = h.invoice_issued(amount_due="10.00")
    await h.handle_invoice(pool, known)
    if unknown == "other tenant's":
        other = h.invoice_issued(amount_due="10.00", tenant_id="ten_other_reconciliation")
        async with pool.acquire() as conn:
            await tenancy.provision(conn, "ten_other_reconciliation", "Other", "dk_test_other_reconciliation_01")
        await h.handle_invoice(pool, other)
        unknown = other["subject"]
    work = [
        (_line(h, "10.00"), [Allocation(known["subject"], Decimal("10.00"), "reference", "named")]),
        (_line(h, "5.00"), [Allocation(unknown, Decimal("5.00"), "reference", "named")]),
    ]
    with pytest.raises(AllocationError) as refused:
        async with pool.acquire() as conn, conn.transaction():
            await allocations_batch.allocate_many(conn, work)
    assert refused.value.field == "invoice_id"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await pool.fetchval("SELECT count(*) FROM allocations") == 0
    row = await pool.fetchrow("SELECT balance, balance_version FROM invoices WHERE invoice_id = $1", known["subject"])
    assert (row["balance"], row["balance_version"]) == (Decimal("10.00"), 0)


async def test_a_run_of_exact_payments_takes_a_few_statements(pool, h):
    """The point of the fast path: 50 matched lines, one statement per kind of row, not ten per line."""
    customer, invoices = new_id("cus"), []
    for _ in range(50):
        issued = h.invoice_issued(amount_due="10.00")
        issued["data"]["customer"]["customer_id"] = customer
        await h.handle_invoice(pool, issued)
        invoices.append(issued["subject"])
    work = [
        (
            IncomingPayment(
                tenant_id=h.TENANT,
                source="bank_statement",
                source_reference=new_id("line"),
                currency="EUR",
                amount=Decimal("10.00"),
                received_at=utcnow(),
                keys=MatchKeys(),
            ),
            [Allocation(i, Decimal("10.00"), "reference", "named")],
        )
        for i in invoices
    ]
    statements = []
    async with pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(lambda record: statements.append(record.query))
        results = await allocations_batch.allocate_many(conn, work)
    assert {r.status for r in results} == {"applied"}
    ours = [q for q in statements if not q.startswith(("\n", "WITH RECURSIVE", "COMMIT"))]  # not asyncpg's own
    assert len(ours) <= 10
    assert await pool.fetchval("SELECT count(*) FROM invoices WHERE status = 'paid' AND balance_version = 1") == 50
