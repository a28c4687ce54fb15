"""The rules of a change, one at a time: If-Match against the version, and what a new state changes."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from dunning_ingest.changes import State, changed_immutable, customer_of, field_changes

pytestmark = pytest.mark.unit

ROW = {
    "id": "inv_0123456789",
    "external_id": "in_1",
    "status": "open",
    "version": 3,
    "number": "INV-1",
    "currency": "EUR",
    "amount_due": Decimal("1250.00"),
    "issue_date": date(2026, 11, 2),
    "due_date": date(2026, 11, 16),
    "payment_url": None,
    "metadata": {"po": "1"},
    "customer_id": "cus_0123456789",
    "customer_external_id": "c1",
    "customer_name": "Acme",
    "customer_email": "ap@acme.de",
    "customer_locale": "en-GB",
    "customer_timezone": "Europe/London",
    "customer_country": None,
    "customer_subdivision": None,
    "customer_tags": None,
    "customer_attributes": None,
    "created_at": datetime(2026, 11, 2, tzinfo=UTC),
}


def state(**changes) -> State:
    base = State("INV-1", customer_of(ROW), Decimal("1250.00"), date(2026, 11, 16), None, {"po": "1"})
    return base._replace(**changes)


@pytest.mark.parametrize(
    "new, expected",
    [
        pytest.param(state(), [], id="nothing"),
        pytest.param(state(amount_due=Decimal("1250")), [], id="same amount spelt differently"),
        pytest.param(state(amount_due=Decimal("99.5")), [("amount_due", "1250.00", "99.50")], id="amount"),
        pytest.param(state(due_date=date(2026, 12, 1)), [("due_date", "2026-11-16", "2026-12-01")], id="due date"),
        pytest.param(
            state(customer=customer_of(ROW)._replace(name="Acme Ltd")), [], id="customer details are the customer's"
        ),
        pytest.param(
            state(customer=customer_of(ROW)._replace(customer_id="", external_id="c2")),
            [("customer", "c1", "c2")],
            id="another customer",
        ),
        pytest.param(
            state(payment_url="https://pay.example/i", metadata={}),
            [("payment_url", None, "https://pay.example/i"), ("metadata", {"po": "1"}, {})],
            id="two fields, in the contract's order",
        ),
    ],
)
def test_field_changes_name_each_changed_field_old_and_new(new, expected):
    assert [(c["field"], c["previous"], c["value"]) for c in field_changes(ROW, new)] == expected


def test_currency_and_issue_date_never_change():
    assert changed_immutable(ROW, "EUR", date(2026, 11, 2)) is None
    assert changed_immutable(ROW, None, None) is None
    assert changed_immutable(ROW, "USD", None) == "currency"
    assert changed_immutable(ROW, "EUR", date(2026, 11, 3)) == "issue_date"
