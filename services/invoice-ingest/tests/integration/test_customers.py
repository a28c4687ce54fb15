"""Customers as a resource, on a real PostgreSQL: list, read (contacts, open invoices, balance per
currency), PATCH under If-Match, and the CustomerUpdated that every real change publishes — from a
PATCH and from an invoice that brings new customer details, never from one that does not."""

import asyncio
from datetime import datetime

import pytest

from dunning.contracts import CustomerUpdated
from dunning.events import decode, dumps
from dunning.ids import new_id
from dunning_tools.testing.invoices import customer_in

pytestmark = pytest.mark.integration

UPDATED = CustomerUpdated.TYPE


def customer(**changes) -> dict:
    """Brandt & Söhne, Berlin; with `changes` on top."""
    base = {"external_id": "cus_brandt", "name": "Brandt & Söhne GmbH", "email": "ap@brandt-soehne.de"}
    return customer_in(**{**base, "locale": "de-DE", "timezone": "Europe/Berlin", **changes})


async def issue(client, kit, cust: dict | None = None, **invoice) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(customer=cust or customer(), **invoice))
    assert r.status_code == 201, r.text
    return r.json()


async def updates(pool, kit, customer_id: str | None = None) -> list[dict]:
    """The CustomerUpdated envelopes in the outbox (checked against the contract by outbox_events)."""
    return await kit.outbox_events(pool, UPDATED, customer_id, topic=CustomerUpdated.topic())


async def test_a_customer_reads_back_with_contacts_open_invoices_and_a_balance_per_currency(client, pool, kit):
    eur = await issue(client, kit, amount_due="1250.00")
    await issue(client, kit, amount_due="100.50")
    jpy = await issue(client, kit, currency="JPY", amount_due="158000", payment_url=None)
    settled = await issue(client, kit, amount_due="99.00")
    await kit.apply(
        pool,
        kit.event_like(
            "PaymentReceived",
            "partial-stripe-payment.json",
            tenant_id=kit.TENANT,
            invoice_id=settled["id"],
            payment_id=new_id("pay"),
            amount="99.00",
            amount_applied="99.00",
            balance_remaining="0.00",
            settled=True,
        ),
    )
    customer_id = eur["customer"]["id"]

    r = await client.get(f"/v1/customers/{customer_id}")
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"1"'
    body = r.json()
    assert body["id"] == customer_id and body["external_id"] == "cus_brandt"
    assert body["contacts"] == {"email": "ap@brandt-soehne.de", "cc": []}
    assert (body["locale"], body["timezone"], body["version"]) == ("de-DE", "Europe/Berlin", 1)
    assert body["balances"] == {"EUR": "1350.50", "JPY": "158000"}  # the paid one counts for nothing
    assert body["holds"] == []
    shown = body["open_invoices"]
    assert shown["has_more"] is False
    assert [i["id"] for i in shown["data"]][0] == jpy["id"]  # newest first
    assert settled["id"] not in [i["id"] for i in shown["data"]] and len(shown["data"]) == 3
    assert shown["data"][0] == {
        "id": jpy["id"],
        "external_id": jpy["external_id"],
        "number": jpy["number"],
        "currency": "JPY",
        "balance": "158000",
        "due_date": jpy["due_date"],
    }


async def test_a_customer_with_many_open_invoices_shows_the_newest_and_says_there_are_more(client, kit):
    items = [kit.invoice_payload(customer=customer()) for _ in range(51)]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert r.status_code == 200 and r.json()["summary"]["created"] == 51
    [listed] = (await client.get("/v1/customers")).json()["data"]
    body = (await client.get(f"/v1/customers/{listed['id']}")).json()
    assert len(body["open_invoices"]["data"]) == 50 and body["open_invoices"]["has_more"] is True
    assert body["balances"] == {"EUR": "63750.00"}  # all 51, not only those shown


async def test_customers_list_by_external_id_page_by_page_and_filter(client, kit):
    made = []
    for n in (2, 0, 1):  # created in another order than their external ids
        made.append((await issue(client, kit, customer(external_id=f"c{n}", email=f"AP{n}@example.com")))["customer"])
    made.sort(key=lambda c: c["external_id"])
    await client.post(
        "/v1/invoices", json=kit.invoice_payload(), headers={"Authorization": f"Bearer {kit.OTHER_KEY}"}
    )  # another tenant's customer: never listed

    first = (await client.get("/v1/customers", params={"limit": 2})).json()
    assert [c["id"] for c in first["data"]] == [made[0]["id"], made[1]["id"]]
    assert first["data"][0]["contacts"] == {"email": "AP0@example.com", "cc": []} and first["data"][0]["version"] == 1
    rest = (await client.get("/v1/customers", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [c["id"] for c in rest["data"]] == [made[2]["id"]] and rest["next_cursor"] is None

    by_external = (await client.get("/v1/customers", params={"external_id": "c1"})).json()["data"]
    assert [c["id"] for c in by_external] == [made[1]["id"]]
    by_email = (await client.get("/v1/customers", params={"email": "ap0@EXAMPLE.com"})).json()["data"]
    assert [c["id"] for c in by_email] == [made[0]["id"]]

    bad = await client.get("/v1/customers", params={"cursor": "eyJhZnRlciI6IiJ9"})  # {"after": ""}
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("customer_id", ["cus_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "nope"])
async def test_an_unknown_customer_is_404(client, customer_id):
    for r in (
        await client.get(f"/v1/customers/{customer_id}"),
        await client.patch(f"/v1/customers/{customer_id}", json={"name": "X"}),
    ):
        assert r.status_code == 404 and r.json()["errors"][0]["field"] == "customer_id"


async def test_another_tenants_customer_is_404_and_stays_as_it_was(client, kit):
    theirs = await client.post(
        "/v1/invoices", json=kit.invoice_payload(), headers={"Authorization": f"Bearer {kit.OTHER_KEY}"}
    )
    customer_id = theirs.json()["customer"]["id"]
    assert (await client.get(f"/v1/customers/{customer_id}")).status_code == 404
    assert (await client.patch(f"/v1/customers/{customer_id}", json={"name": "Hijacked"})).status_code == 404
    own = await client.get(f"/v1/customers/{customer_id}", headers={"Authorization": f"Bearer {kit.OTHER_KEY}"})
    assert own.json()["name"] == "Brandt & Söhne GmbH"


async def test_patch_changes_the_customer_and_publishes_customer_updated(client, pool, kit):
    customer_id = (await issue(client, kit))["customer"]["id"]
    patch = {"email": "payables@brandt-soehne.de", "cc": ["cfo@brandt-soehne.de", "ar-copy@brandt-soehne.de"]}
    r = await client.patch(
        f"/v1/customers/{customer_id}",
        json=patch,
        headers={"If-Match": '"1"', "content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    body = r.json()
    assert body["version"] == 2 and body["contacts"] == {"email": patch["email"], "cc": patch["cc"]}
    assert body["name"] == "Brandt & Söhne GmbH" and body["timezone"] == "Europe/Berlin"  # left as they were
    assert (await client.get(f"/v1/customers/{customer_id}")).json() == body

    [event] = await updates(pool, kit)
    assert event["subject"] == customer_id and event["tenantid"] == kit.TENANT
    [row] = await pool.fetch("SELECT key, topic FROM outbox WHERE event_type = $1", UPDATED)
    assert (row["key"], row["topic"]) == (customer_id, "dunning.customers.v1")
    data = decode(dumps(event)).data
    assert isinstance(data, CustomerUpdated)
    assert data._replace(updated_at=None) == CustomerUpdated(
        customer_id=customer_id,
        tenant_id=kit.TENANT,
        external_id="cus_brandt",
        version=2,
        name="Brandt & Söhne GmbH",
        email="payables@brandt-soehne.de",
        cc=("cfo@brandt-soehne.de", "ar-copy@brandt-soehne.de"),
        locale="de-DE",
        timezone="Europe/Berlin",
        changed=("email", "cc"),
        previous_timezone="Europe/Berlin",
        updated_at=None,  # type: ignore[arg-type]
    )
    assert event["time"] == event["data"]["updated_at"]
    assert datetime.fromisoformat(event["time"]) == datetime.fromisoformat(body["updated_at"])


async def test_a_time_zone_change_names_the_previous_one(client, pool, kit):
    customer_id = (await issue(client, kit))["customer"]["id"]
    r = await client.patch(f"/v1/customers/{customer_id}", json={"timezone": "America/New_York", "locale": "de-DE"})
    assert r.status_code == 200 and r.json()["version"] == 2
    [event] = await updates(pool, kit, customer_id)
    assert event["data"]["changed"] == ["timezone"]  # the locale was sent as it was
    assert (event["data"]["timezone"], event["data"]["previous_timezone"]) == ("America/New_York", "Europe/Berlin")


async def test_a_patch_that_changes_nothing_keeps_the_version_and_publishes_nothing(client, pool, kit):
    customer_id = (await issue(client, kit))["customer"]["id"]
    for patch in ({}, {"name": "Brandt & Söhne GmbH", "cc": []}, {"cc": None}):
        r = await client.patch(f"/v1/customers/{customer_id}", json=patch, headers={"If-Match": '"1"'})
        assert r.status_code == 200 and r.headers["etag"] == '"1"' and r.json()["version"] == 1
    assert await updates(pool, kit) == []


async def test_a_stale_if_match_is_412_and_writes_nothing(client, pool, kit):
    customer_id = (await issue(client, kit))["customer"]["id"]
    assert (await client.patch(f"/v1/customers/{customer_id}", json={"name": "Brandt AG"})).json()["version"] == 2

    stale = await client.patch(f"/v1/customers/{customer_id}", json={"name": "Brandt KG"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412, stale.text
    problem = stale.json()
    assert problem["errors"][0]["field"] == "If-Match" and problem["errors"][0]["code"] == "stale_version"
    assert problem["version"] == 2 and stale.headers["etag"] == '"2"'
    weak = await client.patch(f"/v1/customers/{customer_id}", json={"name": "Brandt KG"}, headers={"If-Match": 'W/"2"'})
    assert weak.status_code == 412  # If-Match compares strongly
    current = (await client.get(f"/v1/customers/{customer_id}")).json()
    assert (current["name"], current["version"]) == ("Brandt AG", 2)
    assert len(await updates(pool, kit)) == 1

    for if_match in ('"2"', '"1", "3"', "*"):  # versions 2, 3, 4
        r = await client.patch(
            f"/v1/customers/{customer_id}", json={"name": f"Brandt {if_match}"}, headers={"If-Match": if_match}
        )
        assert r.status_code == 200, (if_match, r.text)
    assert r.json()["version"] == 5


async def test_two_patches_racing_with_the_same_if_match_make_one_change(client, pool, kit):
    customer_id = (await issue(client, kit))["customer"]["id"]
    answers = await asyncio.gather(
        *(
            client.patch(f"/v1/customers/{customer_id}", json={"name": f"Brandt {n}"}, headers={"If-Match": '"1"'})
            for n in range(4)
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 412, 412, 412]
    [event] = await updates(pool, kit)
    assert event["data"]["version"] == 2


@pytest.mark.parametrize(
    "patch, field, code",
    [
        pytest.param({"cc": ["cfo@brandt-soehne.de", "not-an-address"]}, "cc.1", "email", id="bad-cc-address"),
        pytest.param({"cc": ["a@brandt-soehne.de", "A@Brandt-Soehne.de"]}, "cc.1", "duplicate", id="cc-twice"),
        pytest.param({"cc": [f"a{n}@brandt-soehne.de" for n in range(11)]}, "cc", "too_long", id="eleven-cc"),
        pytest.param({"email": "ap@"}, "email", "email", id="bad-email"),
        pytest.param({"name": None}, "name", "string_type", id="null-name"),
        pytest.param({"name": "   "}, "name", "blank", id="blank-name"),
        pytest.param({"locale": "xx-nowhere"}, "locale", "locale", id="unknown-locale"),
        pytest.param({"timezone": "Mars/Olympus"}, "timezone", "timezone", id="unknown-timezone"),
        pytest.param({"external_id": "c2"}, "external_id", "extra_forbidden", id="not-patchable"),
        pytest.param({"fax": "+49"}, "fax", "extra_forbidden", id="unknown-field"),
    ],
)
async def test_a_bad_patch_is_422_naming_the_field_and_changes_nothing(client, pool, kit, patch, field, code):
    customer_id = (await issue(client, kit))["customer"]["id"]
    r = await client.patch(f"/v1/customers/{customer_id}", json=patch)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [(field, code)]
    assert (await client.get(f"/v1/customers/{customer_id}")).json()["version"] == 1
    assert await updates(pool, kit) == []


async def test_an_invoice_with_new_customer_details_updates_the_customer_and_publishes_it(client, pool, kit):
    first = await issue(client, kit)
    customer_id = first["customer"]["id"]
    await client.patch(f"/v1/customers/{customer_id}", json={"cc": ["cfo@brandt-soehne.de"]})
    assert len(await updates(pool, kit)) == 1

    await issue(client, kit)  # the same details again: nothing to publish
    assert len(await updates(pool, kit)) == 1

    second = await issue(client, kit, customer(email="payables@brandt-soehne.de"))
    assert second["customer"]["id"] == customer_id
    _, event = await updates(pool, kit, customer_id)
    data = event["data"]
    assert (data["version"], data["changed"], data["email"]) == (3, ["email"], "payables@brandt-soehne.de")
    assert data["cc"] == ["cfo@brandt-soehne.de"]  # not in an invoice: left as it was
    assert data["previous_timezone"] == data["timezone"] == "Europe/Berlin"
    stored = (await client.get(f"/v1/customers/{customer_id}")).json()
    assert stored["version"] == 3 and stored["contacts"] == {
        "email": "payables@brandt-soehne.de",
        "cc": ["cfo@brandt-soehne.de"],
    }

    again = await client.post("/v1/invoices", json=kit.invoice_payload(first["external_id"]))  # replay: no upsert
    assert again.status_code in (200, 409)
    assert len(await updates(pool, kit)) == 2


async def test_a_bulk_import_publishes_each_changed_customer_once_and_no_unchanged_one(client, pool, kit):
    await issue(client, kit, customer(external_id="same"))
    await issue(client, kit, customer(external_id="moved", timezone="Europe/Berlin"))
    items = [
        kit.invoice_payload(customer=customer(external_id="same")),
        kit.invoice_payload(customer=customer(external_id="moved", timezone="Europe/Lisbon")),
        kit.invoice_payload(customer=customer(external_id="moved", timezone="Europe/Lisbon")),
        kit.invoice_payload(customer=customer(external_id="new")),
    ]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert [x["status"] for x in r.json()["results"]] == ["created"] * 4

    [event] = await updates(pool, kit)
    data = event["data"]
    assert (data["external_id"], data["version"], data["changed"]) == ("moved", 2, ["timezone"])
    assert (data["timezone"], data["previous_timezone"]) == ("Europe/Lisbon", "Europe/Berlin")
    versions = {c["external_id"]: c["version"] for c in (await client.get("/v1/customers")).json()["data"]}
    assert versions == {"same": 1, "moved": 2, "new": 1}


async def test_invoices_racing_to_create_and_change_one_customer_all_land_and_converge(client, pool, kit):
    emails = [f"ap{n}@brandt-soehne.de" for n in range(6)]
    posts = [
        client.post("/v1/invoices", json=kit.invoice_payload(customer=customer(external_id="racing", email=e)))
        for e in emails
    ]
    bulk = client.post(
        "/v1/invoices/bulk",
        json={
            "invoices": [kit.invoice_payload(customer=customer(external_id="racing", email="bulk@brandt-soehne.de"))]
        },
    )
    answers = await asyncio.gather(*posts, bulk)
    assert [r.status_code for r in answers] == [201] * 6 + [200], [r.text for r in answers]
    [stored] = (await client.get("/v1/customers", params={"external_id": "racing"})).json()["data"]
    assert {r.json()["customer"]["id"] for r in answers[:6]} == {stored["id"]}
    events = await updates(pool, kit, stored["id"])
    assert [e["data"]["version"] for e in events] == list(range(2, stored["version"] + 1))  # one per change, in order
    if events:
        assert events[-1]["data"]["email"] == stored["contacts"]["email"]
