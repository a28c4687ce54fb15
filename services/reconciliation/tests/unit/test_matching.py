"""The matching rules alone (matching.py): references in remittance texts, ISO 11649 creditor
references, and the decision over a batch's open invoices."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.matching import (
    Book,
    OpenInvoice,
    References,
    creditor_reference_for,
    decide,
    exact_sum,
    is_creditor_reference,
    references_in,
)

D = Decimal


def pay(amount: str, currency: str = "EUR", **facts) -> IncomingPayment:
    return IncomingPayment(
        tenant_id="ten_1",
        source="bank_statement",
        source_reference="line-1",
        currency=currency,
        amount=D(amount),
        received_at=datetime(2026, 12, 1, tzinfo=UTC),
        keys=MatchKeys(),
        **facts,
    )


def inv(number: str, balance: str, due: str, customer: str | None = "cus_a", **kw) -> OpenInvoice:
    return OpenInvoice(
        invoice_id=kw.pop("invoice_id", f"inv_{number}"),
        number=number,
        external_id=kw.pop("external_id", f"ext-{number}"),
        currency=kw.pop("currency", "EUR"),
        balance=D(balance),
        due_date=date.fromisoformat(due),
        customer_id=customer,
        customer_name=kw.pop("customer_name", "Brandt & Söhne GmbH" if customer == "cus_a" else customer),
    )


def allocated(decision) -> list[tuple[str, str]]:
    return [(a.invoice_id, str(a.amount)) for a in decision.allocations]


@pytest.mark.parametrize(
    ("reference", "valid"),
    [
        pytest.param("RF18539007547034", True, id="iso-example"),
        pytest.param("RF18539007547035", False, id="one-digit-off"),
        pytest.param("RF19539007547034", False, id="check-digits-off"),
        pytest.param("RF18", False, id="no-body"),
        pytest.param("RF18" + "1" * 22, False, id="body-too-long"),
        pytest.param("rf18539007547034", False, id="not-compact-upper"),
    ],
)
def test_creditor_references_are_checked_mod_97(reference, valid):
    assert is_creditor_reference(reference) is valid


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("INV-1001", id="dashed"),
        pytest.param("2026/0042", id="slashed"),
        pytest.param("a1", id="lower-case"),
        pytest.param("X" * 21, id="longest"),
    ],
)
def test_an_invoice_number_gives_a_valid_creditor_reference(number):
    reference = creditor_reference_for(number)
    assert reference is not None and is_creditor_reference(reference)
    assert reference[4:] == "".join(c for c in number.upper() if c.isalnum())


def test_the_documented_example():
    assert creditor_reference_for("INV-1001") == "RF06INV1001"


@pytest.mark.parametrize("number", [pytest.param("---", id="no-alphanumerics"), pytest.param("X" * 22, id="too-long")])
def test_no_creditor_reference_when_the_number_cannot_carry_one(number):
    assert creditor_reference_for(number) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "INV-1001 INV-1004 less credit",
            References((), ("INV-1001", "INV-1004", "LESS", "CREDIT")),
            id="two-numbers",
        ),
        pytest.param("inv-1001, inv-1002;1003.", References((), ("INV-1001", "INV-1002", "1003")), id="separators"),
        pytest.param("Rechnung 2026/0042", References((), ("RECHNUNG", "2026/0042", "2026", "0042")), id="slashes"),
        pytest.param("RF18 5390 0754 7034 thanks", References(("RF18539007547034",), ("THANKS",)), id="rf-print"),
        pytest.param("ref RF18539007547034", References(("RF18539007547034",), ("REF",)), id="rf-compact"),
        pytest.param("RF18 5390 0754 7035", References((), ("RF18", "5390", "0754", "7035")), id="rf-invalid"),
        pytest.param("", References(), id="empty"),
        pytest.param(None, References(), id="none"),
    ],
)
def test_references_in_a_remittance(text, expected):
    assert references_in(text) == expected


def test_a_creditor_reference_decides_first():
    rf = creditor_reference_for("INV-7")
    book = Book.of([inv("INV-7", "100.00", "2026-10-01"), inv("INV-8", "100.00", "2026-09-01")])
    decision = decide(pay("100.00", creditor_reference=rf, remittance="INV-8"), book)
    assert (decision.rule, allocated(decision)) == ("creditor_reference", [("inv_INV-7", "100.00")])


def test_a_structured_reference_equal_to_an_external_id_matches():
    book = Book.of([inv("INV-7", "100.00", "2026-10-01", external_id="ACC-77")])
    decision = decide(pay("100.00", creditor_reference="acc-77"), book)
    assert (decision.rule, allocated(decision)) == ("creditor_reference", [("inv_INV-7", "100.00")])


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        pytest.param("300.00", [("inv_INV-1004", "200.00"), ("inv_INV-1001", "100.00")], id="exact"),
        pytest.param("250.00", [("inv_INV-1004", "200.00"), ("inv_INV-1001", "50.00")], id="short"),
        pytest.param("120.00", [("inv_INV-1004", "120.00")], id="short-oldest-first"),
        pytest.param("350.00", [("inv_INV-1004", "200.00"), ("inv_INV-1001", "100.00")], id="over-excess-left"),
    ],
)
def test_several_invoices_named_are_paid_oldest_due_first(amount, expected):
    book = Book.of([inv("INV-1001", "100.00", "2026-10-05"), inv("INV-1004", "200.00", "2026-10-01")])
    decision = decide(pay(amount, remittance="INV-1001 INV-1004 less credit"), book)
    assert decision.rule == "reference"
    assert decision.reason == "INV-1004 and INV-1001 named in the remittance"
    assert allocated(decision) == expected


def test_a_token_naming_two_invoices_is_ambiguous():
    book = Book.of([inv("1001", "100.00", "2026-10-01"), inv("INV-9", "100.00", "2026-10-01", external_id="1001")])
    assert decide(pay("55.00", remittance="1001"), book).rule is None


@pytest.mark.parametrize(
    ("invoice", "payment"),
    [
        pytest.param(
            inv("INV-1", "100.00", "2026-10-01", currency="USD"), pay("100.00", remittance="INV-1"), id="currency"
        ),
        pytest.param(inv("INV-1", "0", "2026-10-01"), pay("100.00", remittance="INV-1"), id="not-open"),
    ],
)
def test_only_open_invoices_in_the_currency_are_candidates(invoice, payment):
    assert decide(payment, Book.of([invoice])).allocations == ()


def test_a_known_payer_account_pays_its_oldest_invoice_of_exactly_the_amount():
    invoices = [
        inv("A-3", "80.00", "2026-10-09"),
        inv("A-1", "80.00", "2026-10-01"),
        inv("B-1", "80.00", "2026-09-01", customer="cus_b"),
    ]
    book = Book.of(invoices, {"DE89370400440532013000": "cus_a"})
    decision = decide(pay("80.00", payer_account="DE89370400440532013000"), book)
    assert (decision.rule, allocated(decision)) == ("payer_account_amount", [("inv_A-1", "80.00")])


def test_a_known_payer_account_pays_an_exact_sum_of_several():
    invoices = [inv("A-1", "50.00", "2026-10-01"), inv("A-2", "70.00", "2026-10-02"), inv("A-3", "30.00", "2026-10-03")]
    book = Book.of(invoices, {"DE89370400440532013000": "cus_a"})
    decision = decide(pay("80.00", payer_account="DE89370400440532013000"), book)
    assert decision.rule == "customer_sum"
    assert allocated(decision) == [("inv_A-1", "50.00"), ("inv_A-3", "30.00")]


def test_the_payer_name_names_a_customer_only_if_unique():
    unique = Book.of([inv("A-1", "50.00", "2026-10-01")])
    decision = decide(pay("50.00", payer_name="  brandt &  SÖHNE gmbh"), unique)
    assert (decision.rule, allocated(decision)) == ("customer_amount", [("inv_A-1", "50.00")])
    twice = Book.of(
        [
            inv("A-1", "50.00", "2026-10-01"),
            inv("C-1", "50.00", "2026-10-01", customer="cus_c", customer_name="Brandt & Söhne GmbH"),
        ]
    )
    assert decide(pay("50.00", payer_name="Brandt & Söhne GmbH"), twice).rule is None


def test_the_processors_customer_id_names_the_customer():
    book = Book.of([inv("A-1", "50.00", "2026-10-01"), inv("B-1", "50.00", "2026-09-01", customer="cus_b")])
    decision = decide(pay("50.00", customer_id="cus_b"), book)
    assert (decision.rule, allocated(decision)) == ("customer_amount", [("inv_B-1", "50.00")])


def test_an_amount_alone_never_matches_but_is_suggested():
    book = Book.of([inv("A-1", "50.00", "2026-10-01"), inv("B-1", "70.00", "2026-09-01", customer="cus_b")])
    decision = decide(pay("50.00", payer_name="Somebody Else"), book)
    assert decision.rule is None and decision.allocations == ()
    [suggestion] = decision.suggestions
    assert suggestion["invoice_id"] == "inv_A-1" and suggestion["balance"] == "50.00"
    assert "amount equal" in suggestion["why"]


def test_suggestions_rank_amount_then_name_then_reference_at_most_five():
    invoices = [inv(f"A-{1000 + n}", f"{10 + n}.00", f"2026-10-{n + 1:02d}") for n in range(8)]
    invoices.append(inv("B-1", "99.00", "2026-10-01", customer="cus_b"))
    book = Book.of(invoices)
    decision = decide(pay("99.00", payer_name="Brandt and Sohne", remittance="for 1007x"), book)
    ids = [s["invoice_id"] for s in decision.suggestions]
    assert ids[0] == "inv_B-1" and ids[1] == "inv_A-1007" and len(ids) == 5
    assert all(0 < s["score"] <= 1 for s in decision.suggestions)


def test_a_book_consumes_balances_so_two_lines_cannot_take_the_same_amount():
    book = Book.of([inv("A-1", "50.00", "2026-10-01")], {"DE1": "cus_a"})
    first = decide(pay("50.00", payer_account="DE1"), book)
    book.consume(first.allocations)
    assert first.rule == "payer_account_amount"
    assert decide(pay("50.00", payer_account="DE1"), book).rule is None


@pytest.mark.parametrize(
    ("amount", "balances", "expected"),
    [
        pytest.param("30", ["10", "20", "30"], ["10", "20"], id="oldest-preferred"),
        pytest.param("60", ["10", "20", "30"], ["10", "20", "30"], id="all"),
        pytest.param("30", ["30"], [], id="one-is-not-a-sum"),
        pytest.param("7", ["10", "20"], [], id="none"),
        pytest.param("13", ["1"] * 12 + ["1"], [], id="beyond-the-bound"),
    ],
)
def test_exact_sum(amount, balances, expected):
    invoices = [inv(f"N-{n}", b, "2026-10-01") for n, b in enumerate(balances)]
    assert [str(i.balance) for i in exact_sum(D(amount), invoices)] == expected
