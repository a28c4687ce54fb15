"""The hand-written fast paths agree with the reference implementations they stand in for: the
invoice checks with the pydantic model, the UUIDs with their format, the events with the
contract."""

import uuid
from datetime import UTC

import orjson
import pytest

from dunning.events import envelope, validate
from dunning_ingest.invoice_input import amount_text, fast_validate_invoice_in, invoice_adapter
from dunning_ingest.messages import OutboxRow, invoice_issued, issued_rows, new_uuids

pytestmark = pytest.mark.unit

BASE = {
    "external_id": "in_1",
    "number": "INV-1",
    "customer": {
        "external_id": "c1",
        "name": "Brandt & Söhne",
        "email": "ap@acme.de",
        "locale": "en-GB",
        "timezone": "Europe/London",
    },
    "currency": "EUR",
    "amount_due": "1250.00",
    "issue_date": "2026-11-02",
    "due_date": "2026-11-16",
}
C = BASE["customer"]

VARIANTS = [
    {},
    {"currency": "JPY", "amount_due": "158000"},
    {"currency": "KWD", "amount_due": "10.125"},
    {"amount_due": "1250"},
    {"amount_due": "1250.5"},
    {"amount_due": "0.5"},
    {"amount_due": "0100.00"},
    {"amount_due": "999999999999999.99"},
    {"amount_due": "1000000000000000"},
    {"amount_due": " 12.00"},
    {"amount_due": "12."},
    {"amount_due": ".5"},
    {"amount_due": "0"},
    {"amount_due": "0.00"},
    {"amount_due": "1e3"},
    {"amount_due": "-5"},
    {"amount_due": "１２"},
    {"amount_due": 12.5},
    {"amount_due": None},
    {"currency": "JPY", "amount_due": "1000.5"},
    {"currency": "eur"},
    {"currency": "XXX"},
    {"currency": 978},
    {"payment_url": None},
    {"payment_url": "https://pay.example.com/i/1?x=1"},
    {"payment_url": "ftp://x.example"},
    {"payment_url": "https://" + "a" * 2050},
    {"metadata": {}},
    {"metadata": {"po": "1", "é": "ü"}},
    {"metadata": {"k": 1}},
    {"metadata": {"": "v"}},
    {"metadata": {"x" * 41: "v"}},
    {"metadata": {"k": "v" * 501}},
    {"metadata": {f"k{i}": "v" for i in range(51)}},
    {"metadata": ["x"]},
    {"metadata": None},
    {"metadata": {"k": "a\u0000b"}},
    {"number": ""},
    {"number": "   "},
    {"number": "x" * 101},
    {"number": 7},
    {"number": "INV\u00001"},
    {"external_id": "x" * 200},
    {"external_id": "x" * 201},
    {"external_id": "\ud800"},
    {"issue_date": "2026-02-30"},
    {"issue_date": "0000-01-01"},
    {"issue_date": "2026-11-02T00:00:00Z"},
    {"issue_date": 20261102},
    {"due_date": "2026-11-01"},
    {"due_date": "2026-11-02"},
    {"colour": "blue"},
    {"customer": {**C, "locale": "de-DE"}},
    {"customer": {**C, "locale": "en_GB"}},
    {"customer": {**C, "locale": ""}},
    {"customer": {**C, "timezone": "Mars/Olympus"}},
    {"customer": {**C, "timezone": "America/Argentina/Buenos_Aires"}},
    {"customer": {**C, "email": "nope"}},
    {"customer": {**C, "email": "a@b.c."}},
    {"customer": {**C, "name": ""}},
    {"customer": {**C, "extra": 1}},
    {"customer": {k: v for k, v in C.items() if k != "name"}},
    {"customer": {**C, "name": ["x"]}},
    {"customer": "c1"},
    {"customer": None},
]


def _fields(inv) -> dict:
    c = inv.customer
    return {
        "external_id": inv.external_id,
        "number": inv.number,
        "currency": inv.currency,
        "amount_due": (inv.amount_due, str(inv.amount_due)),
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "payment_url": inv.payment_url,
        "metadata": inv.metadata,
        "customer": (c.external_id, c.name, c.email, c.locale, c.timezone),
    }


@pytest.mark.parametrize("changes", VARIANTS, ids=[str(i) for i in range(len(VARIANTS))])
@pytest.mark.parametrize("cached", [False, True])
def test_the_fast_checks_accept_only_what_the_model_accepts_and_read_it_the_same(changes, cached):
    body = {**BASE, **changes}
    customers: dict | None = {} if cached else None
    fast = fast_validate_invoice_in(body, customers)
    if cached:
        assert (
            fast_validate_invoice_in(body, customers) is not None
            if fast is not None
            else fast_validate_invoice_in(body, customers) is None
        )
    try:
        model = invoice_adapter.validate_python(body)
    except Exception:
        assert fast is None
        return
    if fast is not None:
        assert _fields(fast) == _fields(model)
        assert fast.content_hash() == model.content_hash()
        assert amount_text(fast) == amount_text(model)


def test_the_common_shapes_take_the_fast_path():
    for changes in (
        {},
        {"currency": "JPY", "amount_due": "158000"},
        {"metadata": {"po": "1"}},
        {"payment_url": "https://pay.example.com/i/1"},
    ):
        assert fast_validate_invoice_in({**BASE, **changes}) is not None


def test_a_customer_cache_never_mixes_up_customers():
    customers: dict = {}
    a = fast_validate_invoice_in({**BASE, "customer": {**C, "name": "A", "email": "a@x.de"}}, customers)
    b = fast_validate_invoice_in(
        {
            **BASE,
            "customer": {"email": "A", "name": "a@x.de", **{k: C[k] for k in ("external_id", "locale", "timezone")}},
        },
        customers,
    )
    assert a is not None and a.customer.name == "A"
    assert b is None  # "a@x.de" is a fine name but "A" is no email: refused, not served from the cache


def test_uuids_are_random_version_4():
    for text in new_uuids(200):
        value = uuid.UUID(text)
        assert str(value) == text and value.version == 4 and value.variant == uuid.RFC_4122


def test_invoice_issued_events_of_both_paths_match_the_contract_and_each_other():
    inv = fast_validate_invoice_in({**BASE, "metadata": {"customer_id": "\u0001", "po": "1"}})
    customer_id, invoice_id = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    row = OutboxRow("ten_1", invoice_id, inv, "2026-11-02T10:00:00Z", traceparent)
    single = orjson.loads(row.payload(customer_id))
    [lane], [key], [event_id], [headers], [payload] = issued_rows(
        "ten_1", [(invoice_id, customer_id, inv)], "2026-11-02T10:00:00Z", traceparent
    )
    bulk = orjson.loads(payload)
    for env in (single, bulk):
        validate(env)
        assert env["data"]["customer"]["customer_id"] == customer_id
        assert env["data"]["metadata"] == {"customer_id": "\u0001", "po": "1"}
        assert env["traceparent"] == traceparent
    assert {**single, "id": None} == {**bulk, "id": None}
    assert row.headers == {"ce_type": "dunning.InvoiceIssued.v1", "ce_id": single["id"], "traceparent": traceparent}
    assert orjson.loads(headers) == {
        "ce_type": "dunning.InvoiceIssued.v1",
        "ce_id": bulk["id"],
        "traceparent": traceparent,
    }
    assert event_id == bulk["id"] and key == invoice_id and lane == row.lane
    from datetime import datetime

    built = envelope(invoice_issued("ten_1", invoice_id, customer_id, inv, datetime(2026, 11, 2, 10, tzinfo=UTC)))
    validate(built)
    assert {**built["data"], "issued_at": None} == {**single["data"], "issued_at": None}
