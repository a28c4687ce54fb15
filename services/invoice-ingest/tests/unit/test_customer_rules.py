"""The customer's segmentation fields (issue 10) on the input side: the fast path leaves a customer that
gives any of them to InvoiceIn (which checks them and names the field), a customer without them hashes
and validates exactly as before, and the InvoiceIssued payload a POST writes carries the stored values
after the customer id (messages.OutboxRow, as the SQL statement splices them in)."""

from datetime import datetime

import orjson
import pytest

from dunning.events import envelope
from dunning_ingest.customer_rules import COUNTRIES
from dunning_ingest.customers import CustomerPatch
from dunning_ingest.invoice_input import error_list, fast_validate_invoice_in, invoice_adapter
from dunning_ingest.messages import OutboxRow, invoice_issued
from dunning_tools.testing.invoices import customer_in, invoice_in

pytestmark = pytest.mark.unit

EXTRAS = {"country": "DE", "subdivision": "BY", "tags": ["strategic"], "attributes": {"industry": "bau"}}


def test_countries_are_cldr_territories_without_groupings():
    assert {"DE", "AT", "GB", "US", "JP"} <= COUNTRIES
    assert not {"EU", "UN", "ZZ", "QO", "EZ"} & COUNTRIES
    assert all(len(c) == 2 and c.isupper() for c in COUNTRIES)


@pytest.mark.parametrize("key", sorted(EXTRAS))
def test_a_customer_giving_any_segmentation_field_takes_the_model_path(key):
    given = {"country": "DE"} if key == "subdivision" else {}
    payload = invoice_in(customer=customer_in(**given, **{key: EXTRAS[key]}))
    assert fast_validate_invoice_in(payload) is None
    inv = invoice_adapter.validate_python(payload)
    assert getattr(inv.customer, key) == EXTRAS[key]


def test_a_customer_without_them_validates_and_hashes_as_before():
    payload = invoice_in()
    fast, model = fast_validate_invoice_in(payload), invoice_adapter.validate_python(payload)
    assert fast is not None and fast.customer.tags is None and model.customer.tags is None
    assert fast.content_hash() == model.content_hash()
    with_tags = invoice_adapter.validate_python(invoice_in(customer=customer_in(tags=["strategic"])))
    assert with_tags.content_hash() != model.content_hash()


@pytest.mark.parametrize(
    "patch, field",
    [
        pytest.param({"country": "XX"}, "country", id="country"),
        pytest.param({"subdivision": "bay"}, "subdivision", id="subdivision"),
        pytest.param({"tags": ["ok", "ok"]}, "tags", id="duplicate-tag"),
        pytest.param({"tags": ["-no"]}, "tags.0", id="tag"),
        pytest.param({"attributes": {"k": None}}, "attributes.k", id="null-attribute"),
    ],
)
def test_a_bad_patch_names_the_field(patch, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc:
        CustomerPatch.model_validate(patch)
    assert field in [e["field"] for e in error_list(exc.value)]


def test_a_patch_may_clear_them_with_null():
    patch = CustomerPatch.model_validate({"country": None, "subdivision": None, "tags": None, "attributes": None})
    assert patch.model_dump(exclude_unset=True) == dict.fromkeys(EXTRAS)


def test_the_post_payload_carries_the_stored_fields_after_the_customer_id():
    inv = fast_validate_invoice_in(invoice_in())
    at = "2026-11-02T10:00:00Z"
    row = OutboxRow("ten_1", "inv_0123456789", inv, at, None)
    stored = dict(EXTRAS)
    payload = orjson.loads(row.payload("cus_0123456789", stored))
    expected = envelope(
        invoice_issued("ten_1", "inv_0123456789", "cus_0123456789", inv, datetime.fromisoformat(at), stored),
        time=at,
    )
    expected = orjson.loads(orjson.dumps(expected))
    assert payload["data"] == expected["data"]
    assert orjson.loads(row.payload("cus_0123456789"))["data"]["customer"] == {
        k: v for k, v in expected["data"]["customer"].items() if k not in EXTRAS
    }
