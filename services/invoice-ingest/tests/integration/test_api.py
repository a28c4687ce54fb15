"""The invoice API on a real PostgreSQL: creation, idempotency, bulk imports, reads, auth, tenancy."""

import orjson
import pytest

from dunning.events import validate
from dunning.ids import new_id
from dunning_ingest.idempotency import IdempotencyStore
from dunning_ingest.schemas import canonical_fingerprint

pytestmark = pytest.mark.integration


async def test_create_writes_the_invoice_and_its_event_in_one_go(client, pool, kit):
    payload = kit.invoice_payload(currency="JPY", amount_due="158000", payment_url=None)
    r = await client.post("/v1/invoices", json=payload)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("inv_") and r.headers["location"] == f"/v1/invoices/{body['id']}"
    assert body["status"] == "open" and body["amount_due"] == body["balance"] == "158000"
    assert body["customer"]["id"].startswith("cus_") and body["customer"]["locale"] == "de-DE"
    assert body["payments"] == [] and body["timeline"] == []

    [event] = await kit.outbox_events(pool, "dunning.InvoiceIssued.v1")
    validate(event)
    assert event["subject"] == event["data"]["invoice_id"] == body["id"]
    assert event["tenantid"] == kit.TENANT
    assert event["data"]["customer"]["customer_id"] == body["customer"]["id"]
    assert event["data"]["amount_due"] == "158000" and event["data"]["payment_url"] is None

    got = await client.get(r.headers["location"])
    assert got.status_code == 200 and got.json() == body


async def test_idempotency_key_replays_the_first_response_and_refuses_another_body(client, pool, kit):
    headers = {"Idempotency-Key": "order-sync-2026-11-02-0001"}
    payload = kit.invoice_payload()
    first = await client.post("/v1/invoices", json=payload, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers

    # Same key, same body (different key order and spacing): the first response again, exactly.
    again = await client.post(
        "/v1/invoices",
        content=orjson.dumps(dict(reversed(list(payload.items())))),
        headers={**headers, "content-type": "application/json"},
    )
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]

    other = await client.post("/v1/invoices", json=kit.invoice_payload(), headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["type"].endswith("/idempotency-key-reuse")

    # Keys are per tenant: another tenant may use the same key for its own invoice.
    theirs = await client.post(
        "/v1/invoices", json=kit.invoice_payload(), headers={**headers, "Authorization": f"Bearer {kit.OTHER_KEY}"}
    )
    assert theirs.status_code == 201

    assert len(await kit.outbox_events(pool, "dunning.InvoiceIssued.v1")) == 2


async def test_a_key_whose_first_request_is_in_flight_gets_409(client, pool, kit):
    payload = kit.invoice_payload()
    store = IdempotencyStore(pool)
    fingerprint = canonical_fingerprint("POST", "/v1/invoices", payload)
    assert await store.claim(kit.TENANT, "in-flight-key", fingerprint) is None  # first request still running

    r = await client.post("/v1/invoices", json=payload, headers={"Idempotency-Key": "in-flight-key"})
    assert r.status_code == 409 and r.json()["type"].endswith("/idempotency-key-in-flight")
    assert await kit.outbox_events(pool) == []


@pytest.mark.parametrize("key", ["", " ", "k" * 256])
async def test_bad_idempotency_keys_are_refused(client, key, kit):
    r = await client.post("/v1/invoices", json=kit.invoice_payload(), headers={"Idempotency-Key": key})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_same_external_id_is_200_with_same_content_and_409_with_other_content(client, pool, kit):
    payload = kit.invoice_payload()
    created = await client.post("/v1/invoices", json=payload)
    assert created.status_code == 201

    same = await client.post("/v1/invoices", json={**payload, "amount_due": "1250"})  # same amount, spelt differently
    assert same.status_code == 200
    assert same.json()["id"] == created.json()["id"]

    changed = await client.post("/v1/invoices", json={**payload, "amount_due": "1300.00"})
    assert changed.status_code == 409
    problem = changed.json()
    assert problem["errors"][0]["field"] == "external_id"
    assert problem["invoice_id"] == created.json()["id"]
    assert (
        f"PATCH /v1/invoices/{problem['invoice_id']}" in problem["detail"] and '"mode": "upsert"' in problem["detail"]
    )

    assert len(await kit.outbox_events(pool, "dunning.InvoiceIssued.v1")) == 1


async def test_a_second_invoice_of_a_customer_reuses_and_updates_the_customer(client, kit):
    a = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    renamed = {**kit.invoice_payload()["customer"], "name": "Brandt & Söhne AG"}
    b = (await client.post("/v1/invoices", json=kit.invoice_payload(customer=renamed))).json()
    assert a["customer"]["id"] == b["customer"]["id"]
    assert (await client.get(f"/v1/invoices/{a['id']}")).json()["customer"]["name"] == "Brandt & Söhne AG"


@pytest.mark.parametrize(
    "content, status, field",
    [
        pytest.param(b'{"external_id": "x",', 400, None, id="malformed-json"),
        pytest.param({"amount_due": 1250.0}, 422, "amount_due", id="float-amount"),
        pytest.param({"customer": {"external_id": "c"}}, 422, "customer.name", id="partial"),
        pytest.param({"issue_date": 20261102}, 422, "issue_date", id="number-date"),
        pytest.param(b'[{"external_id": "x"}]', 422, None, id="not-an-object"),
        pytest.param(b"", 422, None, id="empty"),
    ],
)
async def test_bad_bodies_are_problems_naming_the_field(client, kit, content, status, field):
    if isinstance(content, dict):
        content = orjson.dumps(kit.invoice_payload(**content))
    r = await client.post("/v1/invoices", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if field:
        assert field in [e["field"] for e in r.json()["errors"]]


async def test_bulk_gives_one_result_per_item_and_never_rejects_the_good_ones(client, pool, kit):
    existing = kit.invoice_payload("in_existing")
    assert (await client.post("/v1/invoices", json=existing)).status_code == 201
    jpy = kit.invoice_payload("in_jpy", currency="JPY", amount_due="1000")
    items = [
        kit.invoice_payload("in_new_1"),  # 0 created
        kit.invoice_payload("in_bad_amount", amount_due=12.5),  # 1 invalid
        jpy,  # 2 created
        existing,  # 3 existing
        {**existing, "number": "INV-CHANGED"},  # 4 conflict
        "not an invoice",  # 5 invalid
        jpy,  # 6 existing (same item twice)
        {**jpy, "amount_due": "2000"},  # 7 conflict with item 2
        kit.invoice_payload("in_bad_jpy", currency="JPY", amount_due="1000.5"),  # 8 invalid
    ]
    r = await client.post("/v1/invoices/bulk", json={"invoices": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == list(range(len(items)))
    assert [x["status"] for x in body["results"]] == [
        "created",
        "invalid",
        "created",
        "existing",
        "conflict",
        "invalid",
        "existing",
        "conflict",
        "invalid",
    ]
    assert body["summary"] == {"created": 2, "updated": 0, "existing": 2, "failed": 5}
    results = body["results"]
    assert results[1]["errors"][0]["field"] == "invoices.1.amount_due"
    assert "decimal string" in results[1]["errors"][0]["message"]
    assert results[8]["errors"] == [{"field": "invoices.8.amount_due", "message": "JPY allows 0 decimal places, got 1"}]
    assert results[4]["errors"][0]["field"] == "invoices.4.external_id"
    assert results[4]["errors"][0]["code"] == "invoice_exists" and "PATCH" in results[4]["errors"][0]["message"]
    assert results[6]["id"] == results[2]["id"] and results[3]["id"] == results[4]["id"]

    events = await kit.outbox_events(pool, "dunning.InvoiceIssued.v1")
    assert len(events) == 3  # the single POST and the two created by the import
    for event in events:
        validate(event)
    assert {e["data"]["invoice_id"] for e in events} >= {results[0]["id"], results[2]["id"]}
    got = await client.get(f"/v1/invoices/{results[2]['id']}")
    assert got.json()["amount_due"] == "1000" and got.json()["currency"] == "JPY"


async def test_bulk_with_an_idempotency_key_replays_and_writes_nothing_twice(client, pool, kit):
    body = {
        "invoices": [
            kit.invoice_payload(
                f"in_bulk_{i}",
                customer={
                    "external_id": f"cus_{i % 3}",
                    "name": f"Customer {i % 3}",
                    "email": f"ap{i % 3}@example.com",
                    "locale": "en-GB",
                    "timezone": "Europe/London",
                },
            )
            for i in range(25)
        ]
    }
    headers = {"Idempotency-Key": "nightly-2026-11-02"}
    first = await client.post("/v1/invoices/bulk", json=body, headers=headers)
    assert first.json()["summary"] == {"created": 25, "updated": 0, "existing": 0, "failed": 0}
    again = await client.post("/v1/invoices/bulk", json=body, headers=headers)
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    without_key = await client.post("/v1/invoices/bulk", json=body)
    assert without_key.json()["summary"] == {"created": 0, "updated": 0, "existing": 25, "failed": 0}
    assert len(await kit.outbox_events(pool)) == 25
    assert await pool.fetchval("SELECT count(*) FROM customers") == 3


@pytest.mark.parametrize(
    "content, status, field",
    [
        pytest.param(b"[", 400, None, id="malformed"),
        pytest.param(b'{"invoices": {}}', 422, "invoices", id="not-a-list"),
        pytest.param(b'{"items": []}', 422, "invoices", id="missing"),
        pytest.param(b'{"invoices": [], "dry_run": true}', 422, "dry_run", id="unknown-field"),
    ],
)
async def test_bulk_refuses_bodies_it_cannot_read(client, content, status, field):
    r = await client.post("/v1/invoices/bulk", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json"
    if field:
        assert r.json()["errors"][0]["field"] == field


async def test_bulk_refuses_more_than_the_limit(settings, pool, kit):
    import httpx

    from dunning_ingest.bootstrap import build_app

    app = build_app(settings.model_copy(update={"bulk_max_items": 3}), pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {kit.API_KEY}"}
    ) as c:
        r = await c.post("/v1/invoices/bulk", json={"invoices": [kit.invoice_payload() for _ in range(4)]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "invoices"


@pytest.mark.parametrize("authorization", [None, "Bearer dk_unknown", "Basic abc", "Bearer "])
async def test_requests_without_a_known_key_are_401(client, authorization, kit):
    headers = {"Authorization": authorization} if authorization else {}
    client.headers.pop("Authorization")
    for method, url, kwargs in (
        ("POST", "/v1/invoices", {"json": kit.invoice_payload()}),
        ("POST", "/v1/invoices/bulk", {"json": {"invoices": []}}),
        ("GET", "/v1/invoices", {}),
        ("GET", f"/v1/invoices/{new_id('inv')}", {}),
    ):
        r = await client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == 401, (method, url)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_another_tenants_invoice_is_404(client, kit):
    created = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    theirs = {"Authorization": f"Bearer {kit.OTHER_KEY}"}
    r = await client.get(f"/v1/invoices/{created['id']}", headers=theirs)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/invoices", headers=theirs)).json()["data"] == []
    assert (await client.get(f"/v1/invoices/{new_id('inv')}")).status_code == 404
    assert (await client.get("/v1/invoices/anything%20at%20all")).status_code == 404
    # The same external id in another tenant is another invoice.
    again = await client.post("/v1/invoices", json=kit.invoice_payload(created["external_id"]), headers=theirs)
    assert again.status_code == 201 and again.json()["id"] != created["id"]


async def test_openapi_documents_the_routes(client):
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/invoices", "/v1/invoices/bulk", "/v1/invoices/{invoice_id}"} <= set(spec["paths"])
    assert (await client.get("/docs")).status_code == 200


async def test_list_filters_and_cursor_pagination(client, kit):
    def customer(n: int) -> dict:
        return {
            "external_id": f"cus_{n}",
            "name": f"Customer {n}",
            "email": f"ap{n}@example.com",
            "locale": "en-GB",
            "timezone": "Europe/London",
        }

    ids = []
    for i in range(7):
        r = await client.post(
            "/v1/invoices",
            json=kit.invoice_payload(
                f"in_list_{i}", customer=customer(i % 2), issue_date="2026-11-01", due_date=f"2026-12-{i + 1:02d}"
            ),
        )
        ids.append(r.json()["id"])
    newest_first = sorted(ids, reverse=True)  # ids are time-ordered: newest first is id order

    def expected(*indexes: int) -> list[str]:
        return [i for i in newest_first if i in {ids[n] for n in indexes}]

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/invoices", params=params)).json()
        seen += [i["id"] for i in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first and pages == 3

    async def ids_for(**params) -> list[str]:
        r = await client.get("/v1/invoices", params=params)
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["data"]]

    assert await ids_for(customer="cus_1") == expected(1, 3, 5)
    assert await ids_for(due_before="2026-12-03") == expected(0, 1)
    assert await ids_for(due_after="2026-12-05", customer="cus_0") == expected(6)
    assert await ids_for(status="paid") == []
    assert await ids_for(status="open", limit=2) == newest_first[:2]
    first = (await client.get("/v1/invoices", params={"customer": "cus_0", "limit": 2})).json()
    rest = await ids_for(customer="cus_0", cursor=first["next_cursor"])
    assert [i["id"] for i in first["data"]] + rest == expected(0, 2, 4, 6)
    listed = (await client.get("/v1/invoices", params={"limit": 1})).json()["data"][0]
    assert listed["id"] == newest_first[0] and "timeline" not in listed


@pytest.mark.parametrize(
    "params, field",
    [
        pytest.param({"cursor": "garbage"}, "cursor", id="bad-cursor"),
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": 201}, "limit", id="limit-201"),
        pytest.param({"status": "overdue"}, "status", id="bad-status"),
        pytest.param({"due_before": "tomorrow"}, "due_before", id="bad-date"),
    ],
)
async def test_bad_list_parameters_are_problems_naming_the_parameter(client, params, field):
    r = await client.get("/v1/invoices", params=params)
    assert r.status_code in (400, 422) and r.headers["content-type"] == "application/problem+json"
    assert any(e["field"].endswith(field) for e in r.json()["errors"])


async def test_text_postgresql_cannot_store_is_refused_not_a_500(client, kit):
    nul = await client.post("/v1/invoices", json=kit.invoice_payload(number="INV\u00001"))
    assert nul.status_code == 422 and nul.json()["errors"][0]["field"] == "number"
    body = orjson.dumps(kit.invoice_payload(metadata={"note": "SURROGATE"})).replace(b"SURROGATE", b"\\ud800")
    surrogate = await client.post("/v1/invoices", content=body, headers={"content-type": "application/json"})
    assert surrogate.status_code == 422 and surrogate.json()["errors"][0]["field"] == "metadata.note"
    bulk = await client.post(
        "/v1/invoices/bulk",
        json={
            "invoices": [
                kit.invoice_payload(customer={**kit.invoice_payload()["customer"], "name": "A\u0000B"}),
                kit.invoice_payload(),
            ]
        },
    )
    assert [r["status"] for r in bulk.json()["results"]] == ["invalid", "created"]
    assert bulk.json()["results"][0]["errors"][0]["field"] == "invoices.0.customer.name"
    assert (await client.get("/v1/invoices", params={"customer": "a\u0000b"})).status_code == 422
    in_path = await client.get("/v1/invoices/inv_%00")  # refused at the edge, the path parameter named
    assert in_path.status_code == 422 and in_path.json()["errors"][0]["field"] == "invoice_id"


async def test_concurrent_requests_for_one_invoice_create_it_once(client, pool, kit):
    import asyncio

    payload = kit.invoice_payload()
    same_key = await asyncio.gather(
        *[client.post("/v1/invoices", json=payload, headers={"Idempotency-Key": "k-race"}) for _ in range(4)]
    )
    assert {r.status_code for r in same_key} <= {201, 409}
    assert [r.status_code for r in same_key].count(201) >= 1
    other = kit.invoice_payload()
    no_key = await asyncio.gather(*[client.post("/v1/invoices", json=other) for _ in range(4)])
    assert sorted(r.status_code for r in no_key) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in no_key}) == 1
    bulk = await asyncio.gather(
        *[
            client.post(
                "/v1/invoices/bulk", json={"invoices": [kit.invoice_payload(f"in_race_{i}") for i in range(50)]}
            )
            for _ in range(3)
        ]
    )
    assert sorted(r.json()["summary"]["created"] for r in bulk) == [0, 0, 50]
    assert len(await kit.outbox_events(pool)) == 1 + 1 + 50
