"""A customer's phone and postal address on a real PostgreSQL: refused with the field named (nothing
stored), the phone normalised to E.164, stored from an invoice (one POST, a bulk import) or a PATCH,
shown on the customer and the invoice, and carried in InvoiceIssued, InvoiceUpdated and CustomerUpdated."""

import pytest

from dunning.contracts import CustomerUpdated, InvoiceIssued
from dunning_tools.testing.invoices import customer_in

pytestmark = pytest.mark.integration

ADDRESS = {
    "name": "Buchhaltung",
    "lines": ["Friedrichstraße 123", "Hinterhaus"],
    "postal_code": "10117",
    "city": "Berlin",
    "region": "BE",
    "country": "DE",
}
CONTACTS = {"phone": "+4930123456", "postal_address": ADDRESS}


def customer(**changes) -> dict:
    base = {"external_id": "cus_huber", "name": "Huber KG", "email": "ap@huber.example"}
    return customer_in(**{**base, "locale": "de-DE", "timezone": "Europe/Berlin", **changes})


async def issued(pool, kit, invoice_id: str) -> dict:
    (event,) = await kit.outbox_events(pool, InvoiceIssued.TYPE, invoice_id)
    return event["data"]


async def updates(pool, kit, customer_id: str) -> list[dict]:
    return await kit.outbox_events(pool, CustomerUpdated.TYPE, customer_id, topic=CustomerUpdated.topic())


def address(**changes) -> dict:
    return {"lines": ["Hauptstraße 1"], "city": "München", "country": "DE", **changes}


@pytest.mark.parametrize(
    "changes, field",
    [
        pytest.param({"phone": "030 123456"}, "customer.phone", id="no-country-code"),
        pytest.param({"phone": "+49 1"}, "customer.phone", id="too-short"),
        pytest.param({"phone": "+1 555 0100 999"}, "customer.phone", id="not-a-valid-number"),
        pytest.param({"phone": 4930123456}, "customer.phone", id="not-text"),
        pytest.param({"postal_address": address(city=None)}, "customer.postal_address.city", id="no-city"),
        pytest.param({"postal_address": address(lines=[])}, "customer.postal_address.lines", id="no-lines"),
        pytest.param({"postal_address": address(lines=["a"] * 5)}, "customer.postal_address.lines", id="5-lines"),
        pytest.param({"postal_address": address(lines=[""])}, "customer.postal_address.lines.0", id="empty-line"),
        pytest.param({"postal_address": address(country="XX")}, "customer.postal_address.country", id="country"),
        pytest.param({"postal_address": address(zip="1")}, "customer.postal_address.zip", id="unknown-member"),
        pytest.param({"postal_address": "Berlin"}, "customer.postal_address", id="not-an-object"),
    ],
)
async def test_a_bad_phone_or_address_is_refused_naming_it_and_nothing_is_stored(client, pool, kit, changes, field):
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**changes)))
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()["errors"]
    assert await pool.fetchval("SELECT count(*) FROM customers") == 0
    assert await kit.outbox_events(pool) == []


async def test_the_phone_is_normalised_and_both_are_stored_shown_and_carried(client, pool, kit):
    given = {"phone": "+49 (30) 123-456", "postal_address": ADDRESS}
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(**given)))
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created["customer"][k] for k in CONTACTS} == CONTACTS
    assert {k: (await issued(pool, kit, created["id"]))["customer"][k] for k in CONTACTS} == CONTACTS
    cust = (await client.get(f"/v1/customers/{created['customer']['id']}")).json()
    assert {k: cust[k] for k in CONTACTS} == CONTACTS

    # the next invoice leaves them out: the stored ones stay and are carried
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))
    assert {k: r.json()["customer"][k] for k in CONTACTS} == CONTACTS
    assert {k: (await issued(pool, kit, r.json()["id"]))["customer"][k] for k in CONTACTS} == CONTACTS
    assert await updates(pool, kit, created["customer"]["id"]) == []

    r = await client.patch(f"/v1/invoices/{created['id']}", json={"amount_due": "999.00"})
    (updated,) = await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1", created["id"])
    assert {k: updated["data"]["customer"][k] for k in CONTACTS} == CONTACTS


async def test_a_customer_without_them_issues_as_before(client, pool, kit):
    body = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))).json()
    assert (body["customer"]["phone"], body["customer"]["postal_address"]) == (None, None)
    assert not set(CONTACTS) & set((await issued(pool, kit, body["id"]))["customer"])


async def test_a_patch_sets_and_clears_them_and_publishes_customer_updated(client, pool, kit):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))).json()
    customer_id = created["customer"]["id"]
    url = f"/v1/customers/{customer_id}"
    r = await client.patch(url, json={"phone": "+4930 123456", "postal_address": address()})
    assert r.status_code == 200, r.text
    whole = {"name": None, "postal_code": None, "region": None, **address()}
    assert (r.json()["phone"], r.json()["postal_address"]) == ("+4930123456", whole)
    (update,) = await updates(pool, kit, customer_id)
    assert set(update["data"]["changed"]) == {"phone", "postal_address"}
    assert update["data"]["phone"] == "+4930123456"
    assert update["data"]["postal_address"] == address()  # its nulls left out, as every optional member

    r = await client.patch(url, json={"phone": "+4930123456"})  # the same number, written otherwise
    assert r.json()["version"] == 2

    r = await client.patch(url, json={"phone": None, "postal_address": None})
    assert (r.json()["phone"], r.json()["postal_address"]) == (None, None)
    cleared = (await updates(pool, kit, customer_id))[-1]["data"]
    assert set(cleared["changed"]) == {"phone", "postal_address"} and not set(CONTACTS) & set(cleared)


@pytest.mark.parametrize(
    "patch, field",
    [
        pytest.param({"phone": "12"}, "phone", id="bad-phone"),
        pytest.param({"postal_address": address(city="")}, "postal_address.city", id="empty-city"),
        pytest.param({"postal_address": {"lines": ["x"], "city": "B"}}, "postal_address.country", id="no-country"),
    ],
)
async def test_a_bad_patch_is_refused_naming_the_field(client, pool, kit, patch, field):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=customer()))).json()
    r = await client.patch(f"/v1/customers/{created['customer']['id']}", json=patch)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()["errors"]
    assert (await client.get(f"/v1/customers/{created['customer']['id']}")).json()["version"] == 1


async def test_a_bulk_import_stores_and_carries_them(client, pool, kit):
    items = [
        kit.invoice_payload(customer=customer(**CONTACTS)),
        kit.invoice_payload(customer=customer()),
        kit.invoice_payload(customer=customer(external_id="cus_other", phone="+49")),
    ]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["created", "created", "invalid"]
    assert results[2]["errors"][0]["field"] == "invoices.2.customer.phone"
    for result in results[:2]:
        data = await issued(pool, kit, result["id"])
        assert {k: data["customer"][k] for k in CONTACTS} == CONTACTS


async def test_openapi_documents_them(client):
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    models = [name for name in schemas if name.endswith(("CustomerIn", "CustomerPatch", "CustomerOut"))]
    assert len(models) >= 4
    for model in models:
        assert set(CONTACTS) <= set(schemas[model]["properties"]), model
