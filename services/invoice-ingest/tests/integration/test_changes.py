"""Invoice changes on a real PostgreSQL: PATCH with If-Match, void, write-off, the bulk upsert mode
(a nightly sync), and the change history the invoice reads back with."""

import asyncio

import pytest

from dunning.clock import isoformat, utcnow
from dunning.ids import new_id

pytestmark = pytest.mark.integration

MERGE_PATCH = {"content-type": "application/merge-patch+json"}


async def created(client, kit, **overrides) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(**overrides))
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    return r.json()


async def test_a_patch_makes_a_new_version_an_event_and_a_history_entry(client, pool, kit):
    invoice = await created(client, kit)
    r = await client.patch(
        f"/v1/invoices/{invoice['id']}",
        json={"due_date": "2026-12-01", "amount_due": "1300", "payment_url": None},
        headers={"If-Match": '"1"', **MERGE_PATCH},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["etag"] == '"2"' and body["version"] == 2
    assert (body["due_date"], body["amount_due"], body["balance"], body["payment_url"]) == (
        "2026-12-01",
        "1300.00",
        "1300.00",
        None,
    )
    assert body["metadata"] == invoice["metadata"] and body["updated_at"] is not None
    assert [e["kind"] for e in body["history"]] == ["created", "updated"]
    assert body["history"][1]["version"] == 2
    assert body["history"][1]["changes"] == [
        {"field": "amount_due", "previous": "1250.00", "value": "1300.00"},
        {"field": "due_date", "previous": "2026-11-16", "value": "2026-12-01"},
        {"field": "payment_url", "previous": "https://invoice.example.com/i/412", "value": None},
    ]

    [event] = await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")
    data = event["data"]
    assert event["subject"] == invoice["id"] and event["tenantid"] == kit.TENANT
    assert data["version"] == 2 and data["changed"] == ["amount_due", "due_date", "payment_url"]
    assert (data["previous_amount_due"], data["previous_due_date"]) == ("1250.00", "2026-11-16")
    assert (data["amount_due"], data["due_date"], data["payment_url"]) == ("1300.00", "2026-12-01", None)
    assert data["customer"]["customer_id"] == invoice["customer"]["id"]
    assert data["issue_date"] == invoice["issue_date"] and data["currency"] == "EUR"

    got = await client.get(f"/v1/invoices/{invoice['id']}")
    assert got.headers["etag"] == '"2"' and got.json() == body


async def test_a_patch_that_changes_nothing_keeps_the_version_and_publishes_nothing(client, pool, kit):
    invoice = await created(client, kit)
    same = {"due_date": invoice["due_date"], "amount_due": "1250", "currency": "EUR", "issue_date": "2026-11-02"}
    r = await client.patch(f"/v1/invoices/{invoice['id']}", json=same)
    assert r.status_code == 200 and r.headers["etag"] == '"1"' and r.json()["version"] == 1
    assert await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1") == []


async def test_a_stale_if_match_is_412_and_changes_nothing(client, pool, kit):
    invoice = await created(client, kit)
    url = f"/v1/invoices/{invoice['id']}"
    assert (await client.patch(url, json={"number": "INV-A"}, headers={"If-Match": '"1"'})).status_code == 200
    stale = await client.patch(url, json={"number": "INV-B"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    problem = stale.json()
    assert problem["errors"][0]["field"] == "If-Match" and problem["errors"][0]["code"] == "stale_version"
    assert problem["version"] == 2
    weak = await client.patch(url, json={"number": "INV-B"}, headers={"If-Match": 'W/"2"'})  # strong comparison
    assert weak.status_code == 412
    got = (await client.get(url)).json()
    assert (got["number"], got["version"]) == ("INV-A", 2)
    assert len(await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")) == 1

    anyone = await client.patch(url, json={"number": "INV-C"}, headers={"If-Match": '"7", *'})
    assert anyone.status_code == 200 and anyone.headers["etag"] == '"3"'
    listed = await client.patch(url, json={"number": "INV-D"}, headers={"If-Match": '"1", "3"'})
    assert listed.status_code == 200 and listed.json()["number"] == "INV-D"


async def test_concurrent_patches_with_the_same_if_match_one_wins(client, pool, kit):
    invoice = await created(client, kit)
    url = f"/v1/invoices/{invoice['id']}"
    answers = await asyncio.gather(
        *[client.patch(url, json={"number": f"INV-{n}"}, headers={"If-Match": '"1"'}) for n in range(4)]
    )
    assert sorted(r.status_code for r in answers) == [200, 412, 412, 412]
    assert len(await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")) == 1


@pytest.mark.parametrize(
    "patch, field, code",
    [
        pytest.param({"amount": "12.00"}, "amount", "extra_forbidden", id="unknown-field"),
        pytest.param({}, "(body)", "empty_patch", id="empty"),
        pytest.param({"currency": "USD"}, "currency", "immutable", id="currency"),
        pytest.param({"issue_date": "2026-11-01"}, "issue_date", "immutable", id="issue-date"),
        pytest.param({"amount_due": "12.345"}, "amount_due", "amount", id="too-many-decimals"),
        pytest.param({"amount_due": 12}, "amount_due", "amount_type", id="number-amount"),
        pytest.param({"amount_due": None}, "amount_due", None, id="null-amount"),
        pytest.param({"due_date": "2026-10-01"}, "due_date", "due_before_issue", id="due-before-issue"),
        pytest.param({"customer_external_id": "nobody"}, "customer_external_id", "not_found", id="unknown-customer"),
        pytest.param({"metadata": {"k": 1}}, "metadata.k", None, id="metadata-value"),
    ],
)
async def test_a_patch_that_cannot_apply_is_422_naming_the_field_and_changes_nothing(
    client, pool, kit, patch, field, code
):
    invoice = await created(client, kit)
    r = await client.patch(f"/v1/invoices/{invoice['id']}", json=patch)
    assert r.status_code == 422, r.text
    [error] = [e for e in r.json()["errors"] if e["field"] == field]
    assert code is None or error["code"] == code
    assert (await client.get(f"/v1/invoices/{invoice['id']}")).json()["version"] == 1
    assert await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1") == []


async def test_a_patch_moves_the_invoice_to_another_existing_customer(client, pool, kit):
    other = {**kit.invoice_payload()["customer"], "external_id": "cus_other", "name": "Other GmbH"}
    their = await created(client, kit, customer=other)
    invoice = await created(client, kit)
    r = await client.patch(f"/v1/invoices/{invoice['id']}", json={"customer_external_id": "cus_other"})
    assert r.status_code == 200 and r.json()["customer"]["id"] == their["customer"]["id"]
    [event] = await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")
    assert event["data"]["changed"] == ["customer"] and event["data"]["customer"]["name"] == "Other GmbH"
    assert r.json()["history"][-1]["changes"] == [{"field": "customer", "previous": "cus_brandt", "value": "cus_other"}]


async def test_unknown_and_foreign_invoices_are_404(client, kit):
    invoice = await created(client, kit)
    theirs = {"Authorization": f"Bearer {kit.OTHER_KEY}"}
    assert (
        await client.patch(f"/v1/invoices/{invoice['id']}", json={"number": "X"}, headers=theirs)
    ).status_code == 404
    assert (await client.patch(f"/v1/invoices/{new_id('inv')}", json={"number": "X"})).status_code == 404
    r = await client.post(f"/v1/invoices/{invoice['id']}/void", json={"reason": "x"}, headers=theirs)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_void_closes_the_invoice_once_and_a_repeat_answers_the_same(client, pool, kit):
    invoice = await created(client, kit)
    url = f"/v1/invoices/{invoice['id']}"
    r = await client.post(f"{url}/void", json={"reason": "issued in error"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["version"], body["closed_reason"]) == ("void", 2, "issued in error")
    assert body["voided_at"] is not None and r.headers["etag"] == '"2"'
    assert body["history"][-1]["kind"] == "voided" and body["history"][-1]["reason"] == "issued in error"

    again = await client.post(f"{url}/void", json={"reason": "issued in error"}, headers={"If-Match": '"1"'})
    assert again.status_code == 200 and again.json() == body
    [event] = await kit.outbox_events(pool, "dunning.InvoiceVoided.v1")
    assert event["data"]["version"] == 2 and event["data"]["reason"] == "issued in error"

    for method, path, payload in (
        ("POST", f"{url}/void", {"reason": "another reason"}),
        ("POST", f"{url}/write-off", {"reason": "uncollectable"}),
        ("PATCH", url, {"due_date": "2026-12-24"}),
    ):
        closed = await client.request(method, path, json=payload)
        assert closed.status_code == 409, (method, path)
        assert closed.json()["errors"][0]["code"] == "invoice_closed" and closed.json()["invoice_status"] == "void"
    assert len(await kit.outbox_events(pool)) == 2  # InvoiceIssued, InvoiceVoided
    listed = (await client.get("/v1/invoices", params={"status": "void"})).json()["data"]
    assert [i["id"] for i in listed] == [invoice["id"]]


async def test_write_off_records_the_balance_and_honours_if_match(client, pool, kit):
    invoice = await created(client, kit, currency="JPY", amount_due="158000")
    url = f"/v1/invoices/{invoice['id']}"
    payment = kit.event_like(
        "PaymentReceived",
        "settling-api-payment-jpy.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        amount="58000",
        amount_applied="58000",
        balance_remaining="100000",
        settled=False,
        acknowledged_at=isoformat(utcnow()),
    )
    assert await kit.apply(pool, payment)
    stale = await client.post(f"{url}/write-off", json={"reason": "insolvent"}, headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    r = await client.post(f"{url}/write-off", json={"reason": "insolvent"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["written_off_amount"], body["balance"]) == ("written_off", "100000", "100000")
    assert body["written_off_at"] is not None
    assert [(e["kind"], e["amount"]) for e in body["history"]] == [
        ("created", None),
        ("payment", "58000"),
        ("written_off", "100000"),
    ]
    [event] = await kit.outbox_events(pool, "dunning.InvoiceWrittenOff.v1")
    assert (event["data"]["amount_written_off"], event["data"]["currency"]) == ("100000", "JPY")
    again = await client.post(f"{url}/write-off", json={"reason": "insolvent"})
    assert again.status_code == 200 and again.json() == body
    listed = (await client.get("/v1/invoices", params={"status": "written_off"})).json()["data"]
    assert [i["id"] for i in listed] == [invoice["id"]]


async def test_void_with_an_idempotency_key_replays(client, pool, kit):
    invoice = await created(client, kit)
    headers = {"Idempotency-Key": "void-412"}
    first = await client.post(f"/v1/invoices/{invoice['id']}/void", json={"reason": "dup"}, headers=headers)
    again = await client.post(f"/v1/invoices/{invoice['id']}/void", json={"reason": "dup"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(await kit.outbox_events(pool, "dunning.InvoiceVoided.v1")) == 1


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "x" * 501}, {"reason": "x", "note": "y"}])
async def test_void_needs_a_reason(client, kit, body):
    invoice = await created(client, kit)
    r = await client.post(f"/v1/invoices/{invoice['id']}/void", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


async def test_an_amount_corrected_below_what_was_paid_settles_the_invoice(client, pool, kit):
    invoice = await created(client, kit)
    payment = kit.event_like(
        "PaymentReceived",
        "partial-stripe-payment.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        amount="1000.00",
        amount_applied="1000.00",
        balance_remaining="250.00",
        settled=False,
    )
    await kit.apply(pool, payment)
    r = await client.patch(f"/v1/invoices/{invoice['id']}", json={"amount_due": "1000.00"})
    assert (r.json()["status"], r.json()["balance"]) == ("paid", "0.00")
    closed = await client.patch(f"/v1/invoices/{invoice['id']}", json={"amount_due": "1200.00"})
    assert closed.status_code == 409


async def test_the_patched_content_posted_again_is_a_replay_not_a_conflict(client, kit):
    payload = kit.invoice_payload()
    invoice = (await client.post("/v1/invoices", json=payload)).json()
    await client.patch(f"/v1/invoices/{invoice['id']}", json={"due_date": "2026-12-01"})
    again = await client.post("/v1/invoices", json={**payload, "due_date": "2026-12-01"})
    assert again.status_code == 200 and again.headers["etag"] == '"2"'


# --- the nightly sync ----------------------------------------------------------------------------


async def test_a_nightly_upsert_updates_the_changed_invoices_and_leaves_the_rest(client, pool, kit):
    def customer(n: int) -> dict:
        return {
            "external_id": f"cus_{n}",
            "name": f"Customer {n}",
            "email": f"ap{n}@example.com",
            "locale": "en-GB",
            "timezone": "Europe/London",
        }

    items = [kit.invoice_payload(f"in_sync_{i}", customer=customer(i % 3)) for i in range(30)]
    first = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert first.json()["summary"] == {"created": 30, "updated": 0, "existing": 0, "failed": 0}
    ids = [r["id"] for r in first.json()["results"]]
    await client.post(f"/v1/invoices/{ids[7]}/void", json={"reason": "cancelled order"})

    tonight = [dict(i) for i in items]
    tonight[1]["due_date"] = "2026-12-01"
    tonight[2]["amount_due"] = "1300.00"
    tonight[3]["metadata"] = {"po_number": "PO-1", "cost_centre": "7"}
    tonight[4]["customer"] = customer(9)  # a customer the sync brings along
    tonight[5]["amount_due"] = "1250"  # the same amount, spelt differently
    tonight[6]["customer"] = {**customer(0), "name": "Customer 0 Ltd"}  # contact details only
    tonight[7]["due_date"] = "2026-12-01"  # void: cannot change
    tonight[8]["currency"] = "USD"  # never changes
    tonight[9]["issue_date"] = "2026-11-01"  # never changes
    tonight.append(kit.invoice_payload("in_sync_new", customer=customer(1)))

    r = await client.post("/v1/invoices/bulk", json={"mode": "upsert", "invoices": tonight})
    assert r.status_code == 200, r.text
    body = r.json()
    statuses = [x["status"] for x in body["results"]]
    assert statuses[1:5] == ["updated"] * 4
    assert statuses[5:10] == ["existing", "existing", "conflict", "conflict", "conflict"]
    assert statuses[-1] == "created" and statuses.count("existing") == 30 - 4 - 3
    assert body["summary"] == {"created": 1, "updated": 4, "existing": 23, "failed": 3}
    errors = {x["index"]: x["errors"][0] for x in body["results"] if x["status"] == "conflict"}
    assert errors[7]["code"] == "invoice_closed" and "void" in errors[7]["message"]
    assert (errors[8]["field"], errors[8]["code"]) == ("invoices.8.currency", "immutable")
    assert (errors[9]["field"], errors[9]["code"]) == ("invoices.9.issue_date", "immutable")
    assert all(body["results"][i]["id"] == ids[i] for i in range(30))

    events = await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")
    assert sorted(e["subject"] for e in events) == sorted(ids[1:5])
    changed = {e["subject"]: e["data"]["changed"] for e in events}
    assert changed == {ids[1]: ["due_date"], ids[2]: ["amount_due"], ids[3]: ["metadata"], ids[4]: ["customer"]}
    moved = next(e for e in events if e["subject"] == ids[4])
    assert moved["data"]["customer"]["external_id"] == "cus_9" and moved["data"]["version"] == 2
    got = (await client.get(f"/v1/invoices/{ids[2]}")).json()
    assert (got["amount_due"], got["balance"], got["version"]) == ("1300.00", "1300.00", 2)
    assert (await client.get(f"/v1/invoices/{ids[6]}")).json()["customer"]["name"] == "Customer 0 Ltd"

    # The same sync again: nothing left to change, nothing published.
    again = await client.post("/v1/invoices/bulk", json={"mode": "upsert", "invoices": tonight})
    assert again.json()["summary"] == {"created": 0, "updated": 0, "existing": 28, "failed": 3}
    assert len(await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")) == 4


async def test_the_upsert_mode_counts_an_external_id_once_per_request(client, pool, kit):
    payload = kit.invoice_payload("in_twice")
    invoice = (await client.post("/v1/invoices", json=payload)).json()
    items = [{**payload, "number": "INV-NEW"}, {**payload, "number": "INV-NEW"}, {**payload, "number": "INV-OTHER"}]
    r = await client.post("/v1/invoices/bulk", json={"mode": "upsert", "invoices": items})
    assert [x["status"] for x in r.json()["results"]] == ["updated", "existing", "conflict"]
    assert (await client.get(f"/v1/invoices/{invoice['id']}")).json()["number"] == "INV-NEW"
    assert len(await kit.outbox_events(pool, "dunning.InvoiceUpdated.v1")) == 1


@pytest.mark.parametrize("mode", ["merge", None, 1])
async def test_an_unknown_bulk_mode_is_422_naming_it(client, mode):
    r = await client.post("/v1/invoices/bulk", json={"mode": mode, "invoices": []})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mode"


async def test_openapi_documents_the_change_routes(client):
    spec = (await client.get("/openapi.json")).json()
    patch = spec["paths"]["/v1/invoices/{invoice_id}"]["patch"]
    assert patch["operationId"] == "updateInvoice"
    assert set(patch["requestBody"]["content"]) == {"application/json", "application/merge-patch+json"}
    assert {"200", "404", "409", "412", "422"} <= set(patch["responses"])
    assert "ETag" in patch["responses"]["200"]["headers"]
    assert any(p["name"] == "If-Match" for p in patch["parameters"])
    for path, op_id in (("void", "voidInvoice"), ("write-off", "writeOffInvoice")):
        op = spec["paths"][f"/v1/invoices/{{invoice_id}}/{path}"]["post"]
        assert op["operationId"] == op_id and {"409", "412"} <= set(op["responses"])
