"""A customer's country, subdivision, tags and attributes (issue 10) on a real PostgreSQL: refused with
the field named (nothing stored), stored from an invoice (one POST, a bulk import) or a PATCH, shown on
the customer and the invoice, and carried in InvoiceIssued (the stored values, also for an invoice that
leaves them out) and CustomerUpdated."""

import pytest

from dunning.contracts import CustomerUpdated, InvoiceIssued
from dunning_tools.testing.invoices import customer_in

pytestmark = pytest.mark.integration

SEGMENTS = {"country": "DE", "subdivision": "BY", "tags": ["strategic", "b2b"], "attributes": {"industry": "bau"}}


def customer(**changes) -> dict:
    base = {"external_id": "cus_huber", "name": "Huber KG", "email": "ap@huber.example"}
    return customer_in(**{**base, "locale": "de-DE", "timezone": "Europe/Berlin", **changes})


async def issued(pool, kit, invoice_id: str) -> dict:
    """The InvoiceIssued of an invoice in the outbox (checked against its contract)."""
    (event,) = await kit.outbox_events(pool, InvoiceIssued.TYPE, invoice_id)
    return event["data"]


async def updates(pool, kit, customer_id: str) -> list[dict]:
    return await kit.outbox_events(pool, CustomerUpdated.TYPE, customer_id, topic=CustomerUpdated.topic())


@pytest.mark.parametrize(
    "changes, field",
    [
        pytest.param({"country": "XX"}, "customer.country", id="unknown-country"),
        pytest.param({"country": "de"}, "customer.country", id="lower-case-country"),
        pytest.param({"country": "EU"}, "customer.country", id="not-a-country"),
        pytest.param({"subdivision": "BY"}, "customer.subdivision", id="subdivision-without-country"),
        pytest.param({"country": "DE", "subdivision": "by"}, "customer.subdivision", id="bad-subdivision"),
        pytest.param({"tags": ["ok", "fine", "Not OK"]}, "customer.tags.2", id="tag-not-a-slug"),
        pytest.param({"tags": ["a", "b", "a"]}, "customer.tags", id="tag-twice"),
        pytest.param({"tags": [f"t{i}" for i in range(21)]}, "customer.tags", id="too-many-tags"),
        pytest.param({"tags": "strategic"}, "customer.tags", id="tags-not-a-list"),
        pytest.param({"attributes": {"Industry": "bau"}}, "customer.attributes.Industry.[key]", id="bad-key"),
        pytest.param({"attributes": {"industry": "x" * 201}}, "customer.attributes.industry", id="long-value"),
        pytest.param({"attributes": {"size": 5}}, "customer.attributes.size", id="value-not-text"),
        pytest.param({"attributes": {f"k{i}": "v" for i in range(21)}}, "customer.attributes", id="too-many"),
    ],
)
async def test_a_bad_segmentation_field_is_refused_naming_it_and_nothing_is_stored(client, pool, kit, changes, field):
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**changes)))
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert await pool.fetchval("SELECT count(*) FROM invoices") == 0
    assert await pool.fetchval("SELECT count(*) FROM customers") == 0
    assert await kit.outbox_events(pool) == []


async def test_the_fields_are_stored_shown_and_carried_in_invoice_issued(client, pool, kit):
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**SEGMENTS)))
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created["customer"][k] for k in SEGMENTS} == SEGMENTS
    assert created["charges"] is None
    data = await issued(pool, kit, created["id"])
    assert {k: data["customer"][k] for k in SEGMENTS} == SEGMENTS
    assert data["customer"]["customer_id"] == created["customer"]["id"]

    body = (await client.get(f"/v1/invoices/{created['id']}")).json()
    assert {k: body["customer"][k] for k in SEGMENTS} == SEGMENTS
    cust = (await client.get(f"/v1/customers/{created['customer']['id']}")).json()
    assert {k: cust[k] for k in SEGMENTS} == SEGMENTS

    # the next invoice leaves them out: the stored ones stay, and its InvoiceIssued carries them
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))
    assert r.status_code == 201, r.text
    assert {k: r.json()["customer"][k] for k in SEGMENTS} == SEGMENTS
    data = await issued(pool, kit, r.json()["id"])
    assert {k: data["customer"][k] for k in SEGMENTS} == SEGMENTS
    assert await updates(pool, kit, created["customer"]["id"]) == []  # nothing changed


async def test_a_customer_without_the_fields_issues_as_before(client, pool, kit):
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["customer"]["country"], body["customer"]["tags"], body["customer"]["attributes"]) == (None, [], {})
    data = await issued(pool, kit, body["id"])
    assert not set(SEGMENTS) & set(data["customer"])  # omitted, as older events


async def test_an_invoice_that_changes_them_publishes_customer_updated(client, pool, kit):
    first = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**SEGMENTS)))).json()
    customer_id = first["customer"]["id"]
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(country="AT", tags=["strategic"])))
    assert r.status_code == 201, r.text
    # a new country without a subdivision drops the old country's subdivision; attributes stay
    expected = {"country": "AT", "tags": ["strategic"], "attributes": {"industry": "bau"}}
    assert {k: r.json()["customer"][k] for k in SEGMENTS} == {**expected, "subdivision": None}
    (update,) = await updates(pool, kit, customer_id)
    assert set(update["data"]["changed"]) == {"country", "subdivision", "tags"}
    assert {k: update["data"].get(k) for k in SEGMENTS} == {**expected, "subdivision": None}
    assert {k: (await issued(pool, kit, r.json()["id"]))["customer"].get(k) for k in SEGMENTS} == {
        **expected,
        "subdivision": None,
    }


async def test_a_patch_sets_and_clears_them_and_publishes_customer_updated(client, pool, kit):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))).json()
    customer_id = created["customer"]["id"]
    url = f"/v1/customers/{customer_id}"

    r = await client.patch(url, json=SEGMENTS)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in SEGMENTS} == SEGMENTS and r.json()["version"] == 2
    (update,) = await updates(pool, kit, customer_id)
    assert set(update["data"]["changed"]) == set(SEGMENTS)
    assert {k: update["data"][k] for k in SEGMENTS} == SEGMENTS
    body = (await client.get(f"/v1/invoices/{created['id']}")).json()
    assert {k: body["customer"][k] for k in SEGMENTS} == SEGMENTS

    r = await client.patch(url, json=SEGMENTS)  # the same again: nothing changes
    assert r.json()["version"] == 2 and len(await updates(pool, kit, customer_id)) == 1

    r = await client.patch(url, json={"tags": None, "attributes": {}, "country": None})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in SEGMENTS} == {"country": None, "subdivision": None, "tags": [], "attributes": {}}
    cleared = (await updates(pool, kit, customer_id))[-1]["data"]
    assert set(cleared["changed"]) == set(SEGMENTS)
    assert not set(SEGMENTS) & set(cleared)  # none: omitted


@pytest.mark.parametrize(
    "patch, field",
    [
        pytest.param({"subdivision": "BY"}, "subdivision", id="subdivision-without-any-country"),
        pytest.param({"country": "QQ"}, "country", id="unknown-country"),
        pytest.param({"tags": ["ok", "NO"]}, "tags.1", id="bad-tag"),
        pytest.param({"attributes": {"a": "b" * 201}}, "attributes.a", id="long-attribute"),
    ],
)
async def test_a_bad_patch_is_refused_naming_the_field(client, pool, kit, patch, field):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))).json()
    r = await client.patch(f"/v1/customers/{created['customer']['id']}", json=patch)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert (await client.get(f"/v1/customers/{created['customer']['id']}")).json()["version"] == 1


async def test_a_bulk_import_stores_and_carries_them(client, pool, kit):
    items = [
        kit.invoice_payload(customer=customer(**SEGMENTS)),
        kit.invoice_payload(customer=customer()),
        kit.invoice_payload(customer=customer(external_id="cus_other", tags=["Bad Tag"])),
    ]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["created", "created", "invalid"]
    assert results[2]["errors"][0]["field"] == "invoices.2.customer.tags.0"
    for result in results[:2]:
        data = await issued(pool, kit, result["id"])
        assert {k: data["customer"][k] for k in SEGMENTS} == SEGMENTS
    body = (await client.get(f"/v1/invoices/{results[1]['id']}")).json()
    assert {k: body["customer"][k] for k in SEGMENTS} == SEGMENTS


async def test_openapi_documents_the_fields_and_the_charges(client):
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    models = [name for name in schemas if name.endswith(("CustomerIn", "CustomerPatch", "CustomerOut"))]
    assert len(models) >= 4  # the invoice's customer in and out, the customer resource and its patch
    for model in models:
        assert set(SEGMENTS) <= set(schemas[model]["properties"]), model
    charges = schemas["InvoiceDetail"]["properties"]["charges"]
    assert charges["examples"][0]["total_claimed"] == "48.34"
    assert set(schemas["ChargesOut"]["properties"]) >= {"late_fees", "interest", "total_claimed", "waived", "reason"}
    kinds = schemas["InvoiceEventOut"]["properties"]["kind"]["enum"]
    assert {"segment_chosen", "deferred", "notice_composed", "notice_sent", "charges_assessed"} <= set(kinds)


async def test_an_invoice_update_carries_the_customer_fields(client, pool, kit):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**SEGMENTS)))).json()
    r = await client.patch(f"/v1/invoices/{created['id']}", json={"amount_due": "999.00"})
    assert r.status_code == 200, r.text
    (updated,) = await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1", created["id"])
    assert {k: updated["data"]["customer"][k] for k in SEGMENTS} == SEGMENTS
