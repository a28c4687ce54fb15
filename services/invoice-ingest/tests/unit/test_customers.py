"""The rules of a customer PATCH that need no database: If-Match, and the merge patch's checks."""

import pytest
from pydantic import ValidationError

from dunning.http import Problem
from dunning_ingest.customers import CustomerPatch, check_if_match

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "if_match, version, allowed",
    [
        pytest.param(None, 3, True, id="no-header-last-write-wins"),
        pytest.param("*", 3, True, id="any"),
        pytest.param('"3"', 3, True, id="same"),
        pytest.param(' "1" , "3" ', 3, True, id="one-of-a-list"),
        pytest.param('"2"', 3, False, id="stale"),
        pytest.param('W/"3"', 3, False, id="weak-never-matches"),
        pytest.param("3", 3, False, id="unquoted"),
    ],
)
def test_if_match(if_match, version, allowed):
    if allowed:
        check_if_match(if_match, version)
        return
    with pytest.raises(Problem) as refused:
        check_if_match(if_match, version)
    assert refused.value.status == 412 and refused.value.headers == {"ETag": f'"{version}"'}
    assert refused.value.errors == [{"field": "If-Match", "message": refused.value.detail, "code": "stale_version"}]


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
