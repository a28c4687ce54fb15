"""Stripe events -> payments: minor units per Stripe's currency rules, and the keys that find the invoice."""

from decimal import Decimal

import orjson
import pytest

from dunning.money import MoneyError
from dunning_reconciliation.stripe_events import (
    Ignored,
    StripeEventError,
    amount_from_minor,
    parse_event,
    payment_from_event,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        pytest.param(123456, "USD", "1234.56", id="usd-two-decimals"),
        pytest.param(5, "USD", "0.05", id="usd-cents"),
        pytest.param(5000, "JPY", "5000", id="jpy-zero-decimal"),
        pytest.param(1234, "KWD", "1.234", id="kwd-three-decimals"),
        pytest.param(1000, "BHD", "1.000", id="bhd-three-decimals"),
        pytest.param(500, "ISK", "5", id="isk-two-decimal-representation"),
        pytest.param(12345, "HUF", "123.45", id="huf-two-decimals-for-charges"),
        pytest.param(5000, "MGA", "5000.00", id="mga-stripe-zero-decimal-iso-two"),
    ],
)
def test_amount_from_minor(minor, currency, expected):
    amount = amount_from_minor(minor, currency)
    assert amount == Decimal(expected)
    assert str(amount) == expected


@pytest.mark.parametrize(
    ("minor", "currency"),
    [
        pytest.param(550, "ISK", id="isk-fraction"),
        pytest.param(-100, "USD", id="negative"),
        pytest.param(12.5, "USD", id="float"),
        pytest.param("1000", "USD", id="string"),
        pytest.param(True, "USD", id="bool"),
    ],
)
def test_amount_from_minor_refuses(minor, currency):
    with pytest.raises(MoneyError):
        amount_from_minor(minor, currency)


def event(type_: str, obj: dict, created: int = 1_790_000_100) -> bytes:
    return orjson.dumps(
        {"id": "evt_123", "object": "event", "type": type_, "created": created, "data": {"object": obj}}
    )


def test_invoice_paid_keys_and_amount():
    body = event(
        "invoice.paid",
        {
            "id": "in_1ABC",
            "object": "invoice",
            "number": "ACME-0042",
            "amount_paid": 125000,
            "currency": "eur",
            "metadata": {"dunning_invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "external_id": "INV-7"},
            "status_transitions": {"paid_at": 1_790_000_000},
        },
    )
    p = payment_from_event("ten_1", parse_event(body))
    assert (p.currency, p.amount, p.source, p.source_reference, p.stripe_object_id) == (
        "EUR",
        Decimal("1250.00"),
        "stripe",
        "evt_123",
        "in_1ABC",
    )
    assert p.received_at.timestamp() == 1_790_000_000
    assert p.keys.invoice_id == "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    assert p.keys.external_ids == ("INV-7", "in_1ABC")
    assert p.keys.numbers == ("ACME-0042",)


def test_payment_intent_uses_event_time_and_metadata():
    body = event(
        "payment_intent.succeeded",
        {
            "id": "pi_1",
            "object": "payment_intent",
            "amount_received": 5000,
            "currency": "jpy",
            "created": 1,
            "metadata": {"invoice_external_id": "X-1", "invoice_number": "N-1"},
            "invoice": None,
        },
    )
    p = payment_from_event("ten_1", parse_event(body))
    assert (p.amount, p.currency) == (Decimal("5000"), "JPY")
    assert p.received_at.timestamp() == 1_790_000_100
    assert (p.keys.invoice_id, p.keys.external_ids, p.keys.numbers) == (None, ("X-1",), ("N-1",))


@pytest.mark.parametrize(
    ("type_", "obj", "reason"),
    [
        pytest.param("customer.created", {"id": "cus_1"}, "unhandled_type", id="other-type"),
        pytest.param(
            "payment_intent.succeeded",
            {"id": "pi_1", "amount_received": 100, "currency": "usd", "invoice": "in_1"},
            "invoice_payment_intent",
            id="intent-of-a-stripe-invoice",
        ),
        pytest.param(
            "invoice.paid", {"id": "in_1", "amount_paid": 0, "currency": "usd"}, "zero_amount", id="zero-amount"
        ),
    ],
)
def test_ignored(type_, obj, reason):
    assert payment_from_event("ten_1", parse_event(event(type_, obj))) == Ignored(reason)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"{not json", "(body)", id="not-json"),
        pytest.param(b"[]", "(body)", id="not-object"),
        pytest.param(orjson.dumps({"type": "invoice.paid", "data": {"object": {}}}), "id", id="no-id"),
        pytest.param(orjson.dumps({"id": "evt_1", "type": "invoice.paid", "data": {}}), "data.object", id="no-object"),
        pytest.param(
            event("invoice.paid", {"id": "in_1", "amount_paid": 1.5, "currency": "usd"}),
            "data.object.amount_paid",
            id="float-amount",
        ),
        pytest.param(
            event("invoice.paid", {"id": "in_1", "amount_paid": 100, "currency": "zzz"}),
            "data.object.currency",
            id="unknown-currency",
        ),
    ],
)
def test_unreadable_events_name_the_field(body, field):
    with pytest.raises(StripeEventError) as info:
        payment_from_event("ten_1", parse_event(body))
    assert info.value.field == field
