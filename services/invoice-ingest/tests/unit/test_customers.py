"""The rules of a customer PATCH that need no database: the merge patch's checks."""

import pytest
from pydantic import ValidationError

from dunning_ingest.customers import CustomerPatch

pytestmark = pytest.mark.unit


def test_the_patch_takes_the_invoice_customer_rules_and_documents_no_defaults():
    assert CustomerPatch.model_validate({"cc": None, "locale": "en-GB"}).model_dump(exclude_unset=True) == {
        "cc": None,
        "locale": "en-GB",
    }
    with pytest.raises(ValidationError) as bad:
        CustomerPatch.model_validate({"email": "ap@example.com", "cc": ["x"], "timezone": "Europe/Nowhere"})
    assert [e["loc"] for e in bad.value.errors()] == [("cc", 0), ("timezone",)]
    schema = CustomerPatch.model_json_schema()
    assert schema["additionalProperties"] is False and "required" not in schema
    assert all("default" not in prop for prop in schema["properties"].values())
