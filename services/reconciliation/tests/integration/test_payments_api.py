"""POST/GET /v1/payments against real PostgreSQL: idempotency on reference, validation, matching."""

import asyncio

import pytest

pytestmark = pytest.mark.integration


def payment(**overrides) -> dict:
    body = {
        "invoice_external_id": "ACC-1",
        "amount": "400.00",
        "currency": "EUR",
        "received_at": "2026-01-09T09:00:00+01:00",
        "reference": "RCPT-1",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def test_reference_is_idempotent(pool, client, h):
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)

    first = await client.post("/v1/payments", json=payment(), headers=h.AUTH)
    retry = await client.post("/v1/payments", json=payment(), headers=h.AUTH)
    changed = await client.post("/v1/payments", json=payment(amount="401.00"), headers=h.AUTH)

    assert first.status_code == 201
    body = first.json()
    assert (body["status"], body["amount_applied"], body["balance_remaining"], body["settled"]) == (
        "applied",
        "400.00",
        "600.00",
        False,
    )
    assert body["received_at"] == "2026-01-09T08:00:00Z"  # converted to UTC
    assert retry.status_code == 200 and retry.json() == body
    assert changed.status_code == 409 and changed.json()["errors"][0]["field"] == "reference"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    [event] = await h.outbox_events(pool, issued["subject"])
    assert (event["data"]["source"], event["data"]["source_reference"]) == ("api", "RCPT-1")


async def test_payment_for_an_unknown_invoice_waits_for_it(pool, client, h):
    response = await client.post("/v1/payments", json=payment(invoice_external_id="ACC-LATE"), headers=h.AUTH)
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["balance_remaining"]) == ("pending_match", None)

    issued = h.invoice_issued(amount_due="400.00", external_id="ACC-LATE")
    await h.handle_invoice(pool, issued)

    [event] = await h.outbox_events(pool, issued["subject"])
    assert event["data"]["settled"] is True
    listed = await client.get("/v1/payments", params={"invoice_id": issued["subject"]}, headers=h.AUTH)
    assert [p["status"] for p in listed.json()["data"]] == ["applied"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(payment(amount=400.0), "amount", id="float-amount"),
        pytest.param(payment(amount="400.001"), "amount", id="too-many-decimals-eur"),
        pytest.param(payment(amount="400.5", currency="JPY"), "amount", id="decimals-on-jpy"),
        pytest.param(payment(amount="-5.00"), "amount", id="negative"),
        pytest.param(payment(amount="1e3"), "amount", id="exponent"),
        pytest.param(payment(amount="0"), "amount", id="zero"),
        pytest.param(payment(currency="eur"), "currency", id="lower-case-currency"),
        pytest.param(payment(currency="ABC"), "currency", id="unknown-currency"),
        pytest.param(payment(currency="USD"), "currency", id="currency-differs-from-invoice"),
        pytest.param(payment(invoice_external_id=None), "invoice_id", id="no-invoice-key"),
        pytest.param(payment(invoice_id="not-an-id"), "invoice_id", id="malformed-invoice-id"),
        pytest.param(payment(received_at="2026-01-09T09:00:00"), "received_at", id="naive-received-at"),
        pytest.param(payment(received_at="2999-01-01T00:00:00Z"), "received_at", id="far-future-received-at"),
        pytest.param(payment(reference=""), "reference", id="empty-reference"),
        pytest.param(payment(extra="x"), "extra", id="unknown-field"),
    ],
)
async def test_invalid_payments_are_422_naming_the_field(pool, client, h, body, field):
    await h.handle_invoice(pool, h.invoice_issued(amount_due="1000.00", external_id="ACC-1"))
    response = await client.post("/v1/payments", json=body, headers=h.AUTH)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0


async def test_kwd_three_decimals_are_accepted(pool, client, h):
    await h.handle_invoice(pool, h.invoice_issued(currency="KWD", amount_due="10.500", external_id="ACC-1"))
    response = await client.post("/v1/payments", json=payment(amount="10.500", currency="KWD"), headers=h.AUTH)
    assert response.status_code == 201 and response.json()["settled"] is True


async def test_keys_that_disagree_are_refused(pool, client, h):
    issued = h.invoice_issued(external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    body = payment(invoice_id=issued["subject"], invoice_external_id="ACC-OTHER")
    response = await client.post("/v1/payments", json=body, headers=h.AUTH)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "invoice_external_id"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"Authorization": "Bearer dk_wrong"}, id="wrong-key"),
    ],
)
async def test_payments_need_an_api_key(client, headers):
    assert (await client.post("/v1/payments", json=payment(), headers=headers)).status_code == 401
    assert (await client.get("/v1/payments", headers=headers)).status_code == 401


async def test_not_json_is_400(client, h):
    headers = {**h.AUTH, "Content-Type": "application/json"}
    response = await client.post("/v1/payments", content=b"{nope", headers=headers)
    assert response.status_code == 400


async def test_list_pages_through_payments(pool, client, h):
    await h.handle_invoice(pool, h.invoice_issued(amount_due="1000.00", external_id="ACC-1"))
    for n in range(3):
        await client.post("/v1/payments", json=payment(amount="1.00", reference=f"R-{n}"), headers=h.AUTH)
    first = (await client.get("/v1/payments", params={"limit": 2}, headers=h.AUTH)).json()
    rest = (
        await client.get("/v1/payments", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h.AUTH)
    ).json()
    assert [p["reference"] for p in first["data"] + rest["data"]] == ["R-0", "R-1", "R-2"]
    assert rest["next_cursor"] is None
    exactly = (await client.get("/v1/payments", params={"limit": 3}, headers=h.AUTH)).json()
    assert len(exactly["data"]) == 3 and exactly["next_cursor"] is None  # no cursor on the last page


async def test_health_and_docs(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/docs")).status_code == 200
    assert "/v1/webhooks/stripe/{tenant_id}" in (await client.get("/openapi.json")).json()["paths"]


async def test_concurrent_retries_record_one_payment(pool, client, h):
    await h.handle_invoice(pool, h.invoice_issued(amount_due="1000.00", external_id="ACC-1"))
    responses = await asyncio.gather(*(client.post("/v1/payments", json=payment(), headers=h.AUTH) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert all(r.json() == responses[0].json() for r in responses)
    assert await pool.fetchval("SELECT balance FROM invoices") == 600
