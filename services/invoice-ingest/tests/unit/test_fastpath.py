"""The hand-written fast paths agree with the reference implementations they stand in for: the
invoice checks with the pydantic model, the UUIDs with their format, the events with the
contract."""

import uuid
from datetime import UTC

import orjson
import pytest

from dunning.events import envelope, validate
from dunning_ingest.invoice_input import fast_validate_invoice_in
from dunning_ingest.messages import OutboxRow, invoice_issued, issued_rows, new_uuids
from dunning_tools.testing.invoices import customer_in, invoice_in

pytestmark = pytest.mark.unit

BASE = invoice_in(customer=customer_in(name="Brandt & Söhne"))
C = BASE["customer"]


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
