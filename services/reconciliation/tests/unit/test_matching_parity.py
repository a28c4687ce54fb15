"""The matching shortcuts the statement import takes (the statements bench showed the need), each
held equal to the general path it stands for on random books: `Book.of_customer` (kept in age order)
to `Book.open` of the customer's invoices, `by_reference` given `named_by_reference` once to
`by_reference` working it out, while a batch's decisions lower the balances between the two, and
`names_open` (does a reference decide?) to `by_reference` deciding."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.matching import (
    Book,
    OpenInvoice,
    by_reference,
    creditor_reference_for,
    named_by_reference,
    names_open,
    references_in,
)

CUSTOMERS = ("cus_a", "cus_b", "cus_c")
NUMBERS = ("INV-1", "INV-2", "INV-3", "INV-4", "INV-5", "2026/7", "X-8")


@st.composite
def invoices(draw) -> list[OpenInvoice]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(NUMBERS),
                st.sampled_from(("EUR", "USD")),
                st.integers(0, 5000),
                st.one_of(st.none(), st.integers(0, 40)),
                st.sampled_from(CUSTOMERS),
            ),
            max_size=14,
        )
    )
    return [
        OpenInvoice(
            f"inv_{n:02d}",
            number,
            f"ext-{n % 5}",
            currency,
            Decimal(cents) / 100,
            None if days is None else date(2026, 1, 1) + timedelta(days=days),
            customer,
            customer.upper(),
        )
        for n, (number, currency, cents, days, customer) in enumerate(rows)
    ]


def payment(amount: Decimal, remittance: str, creditor_reference: str | None) -> IncomingPayment:
    return IncomingPayment(
        tenant_id="ten_1",
        source="bank_statement",
        source_reference="line",
        currency="EUR",
        amount=amount,
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        keys=MatchKeys(),
        remittance=remittance,
        creditor_reference=creditor_reference,
    )


@settings(max_examples=300, deadline=None)
@given(invoices(), invoices(), st.lists(st.tuples(st.integers(0, 30), st.integers(1, 3000)), max_size=10))
def test_a_customers_invoices_in_age_order_as_open_sorts_them(first, later, takes):
    book = Book.of(first)
    for inv in later:  # added after a first look: sorted again
        book.of_customer(inv.customer_id or "", inv.currency)
        book.add(inv, by_keys=False)
    for n, cents in takes:  # balances lowered, some to zero
        ids = sorted(book.invoices)
        if ids:
            book.set_balance(ids[n % len(ids)], max(book.invoices[ids[n % len(ids)]].balance - Decimal(cents) / 100, 0))
    for customer in (*CUSTOMERS, "cus_none"):
        for currency in ("EUR", "USD"):
            mine = [i for i in book.invoices.values() if i.customer_id == customer]
            assert book.of_customer(customer, currency) == book.open([i.invoice_id for i in mine], currency)


words = st.sampled_from((*NUMBERS, "ext-1", "ext-3", "Rechnung", "RF18539007547034", "2026/7", "vielen"))


@settings(max_examples=300, deadline=None)
@given(
    invoices(),
    st.lists(
        st.tuples(
            st.integers(1, 9000),
            st.lists(words, max_size=4),
            st.one_of(st.none(), st.sampled_from(NUMBERS), st.sampled_from(("ext-2", "RF00BAD"))),
        ),
        max_size=8,
    ),
)
def test_reference_decisions_with_the_named_invoices_worked_out_once(open_invoices, lines):
    """Two books, the same invoices: one decides each line from scratch, the other with the named
    invoices worked out before any line was decided; both consume what they decide."""
    general, shortcut = Book.of([_copy(i) for i in open_invoices]), Book.of([_copy(i) for i in open_invoices])
    batch = []
    for cents, remittance, structured in lines:
        reference = creditor_reference_for(structured) if structured in NUMBERS[:3] else structured
        batch.append(payment(Decimal(cents) / 100, " ".join(remittance), reference))
    refs = [references_in(p.remittance) for p in batch]
    named = [named_by_reference(p, shortcut, r) for p, r in zip(batch, refs, strict=True)]
    for p, r, n in zip(batch, refs, named, strict=True):
        expected, got = by_reference(p, general, r), by_reference(p, shortcut, r, n)
        assert got == expected
        assert names_open(p, shortcut, n) == (expected is not None)
        if expected is not None:
            general.consume(expected.allocations)
            shortcut.consume(expected.allocations)


def _copy(inv: OpenInvoice) -> OpenInvoice:
    return OpenInvoice(**vars(inv))
