"""POST/GET /v1/credit-notes against real PostgreSQL: applied to the balance as a payment is, published
as CreditNoteIssued, idempotent on reference, refused naming the field."""

import asyncio

import pytest

pytestmark = pytest.mark.integration
CREDITED = "dunning.CreditNoteIssued.v1"


def credit_note(**overrides) -> dict:
    body = {
        "invoice_external_id": "ACC-1",
        "reference": "CN-1",
        "amount": "250.00",
        "currency": "EUR",
        "reason": "two units returned",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture
async def invoice(pool, h) -> dict:
    """An open EUR invoice of 1000.00, external id ACC-1."""
    issued = h.invoice_issued(amount_due="1000.00", external_id="ACC-1")
    await h.handle_invoice(pool, issued)
    return issued


async def test_a_partial_credit_note_lowers_the_balance_and_is_published(pool, client, h, invoice):
    response = await client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["credit_note_id"].startswith("cn_")
    assert (body["invoice_id"], body["amount"], body["amount_applied"], body["unapplied_amount"]) == (
        invoice["subject"],
        "250.00",
        "250.00",
        "0.00",
    )
    assert (body["balance_remaining"], body["settled"]) == ("750.00", False)
    assert await pool.fetchval("SELECT balance FROM invoices") == 750
    [event] = await h.outbox_events(pool, invoice["subject"], CREDITED)  # validated against the schema
    data = event["data"]
    assert (data["credit_note_id"], data["reference"], data["reason"]) == (
        body["credit_note_id"],
        "CN-1",
        body["reason"],
    )
    assert (data["amount_applied"], data["balance_remaining"], data["settled"]) == ("250.00", "750.00", False)
    assert (data["invoice_external_id"], data["acknowledged_at"]) == ("ACC-1", body["acknowledged_at"])


async def test_a_credit_note_for_the_balance_settles_and_one_above_it_applies_only_the_balance(
    pool, client, h, invoice
):
    first = await client.post("/v1/credit-notes", json=credit_note(amount="400.00"), headers=h.AUTH)
    settling = await client.post(
        "/v1/credit-notes",
        json=credit_note(invoice_external_id=None, invoice_id=invoice["subject"], reference="CN-2", amount="700.00"),
        headers=h.AUTH,
    )

    assert first.status_code == 201 and settling.status_code == 201, settling.text
    body = settling.json()
    assert (body["amount"], body["amount_applied"], body["unapplied_amount"]) == ("700.00", "600.00", "100.00")
    assert (body["balance_remaining"], body["settled"]) == ("0.00", True)
    assert await pool.fetchrow("SELECT balance, status FROM invoices") == (0, "paid")
    events = await h.outbox_events(pool, invoice["subject"], CREDITED)
    assert [(e["data"]["amount_applied"], e["data"]["settled"]) for e in events] == [
        ("400.00", False),
        ("600.00", True),
    ]


async def test_the_same_reference_answers_the_first_result_and_different_content_is_409(pool, client, h, invoice):
    first = await client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH)
    retry = await client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH)
    changed = await client.post("/v1/credit-notes", json=credit_note(amount="251.00"), headers=h.AUTH)
    other_reason = await client.post("/v1/credit-notes", json=credit_note(reason="pricing error"), headers=h.AUTH)

    assert first.status_code == 201
    assert retry.status_code == 200 and retry.json() == first.json()
    for conflict in (changed, other_reason):
        assert conflict.status_code == 409
        assert conflict.headers["content-type"].startswith("application/problem+json")
        assert conflict.json()["errors"][0]["field"] == "reference"
    assert await pool.fetchval("SELECT count(*) FROM credit_notes") == 1
    assert await pool.fetchval("SELECT balance FROM invoices") == 750
    assert len(await h.outbox_events(pool, invoice["subject"], CREDITED)) == 1


async def test_concurrent_retries_apply_one_credit_note(pool, client, h, invoice):
    responses = await asyncio.gather(
        *(client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert all(r.json() == responses[0].json() for r in responses)
    assert await pool.fetchval("SELECT balance FROM invoices") == 750


@pytest.mark.parametrize(
    ("body", "status", "field", "code"),
    [
        pytest.param(credit_note(currency="USD"), 422, "currency", "currency_mismatch", id="currency-differs"),
        pytest.param(credit_note(amount="0"), 422, "amount", "invalid_amount", id="zero"),
        pytest.param(credit_note(amount="-5.00"), 422, "amount", "invalid_amount", id="negative"),
        pytest.param(credit_note(amount="1.001"), 422, "amount", "invalid_amount", id="too-many-decimals"),
        pytest.param(credit_note(amount=250.0), 422, "amount", None, id="float"),
        pytest.param(credit_note(currency="eur"), 422, "currency", None, id="lower-case-currency"),
        pytest.param(credit_note(reason=""), 422, "reason", None, id="empty-reason"),
        pytest.param(credit_note(reason=None), 422, "reason", None, id="no-reason"),
        pytest.param(credit_note(reference=None), 422, "reference", None, id="no-reference"),
        pytest.param(credit_note(invoice_external_id=None), 422, "invoice_id", "missing", id="no-invoice"),
        pytest.param(credit_note(invoice_id="inv-nope"), 422, "invoice_id", None, id="malformed-invoice-id"),
        pytest.param(credit_note(extra="x"), 422, "extra", None, id="unknown-field"),
        pytest.param(
            credit_note(invoice_external_id="ACC-404"), 404, "invoice_external_id", "not_found", id="unknown-external"
        ),
        pytest.param(
            credit_note(invoice_external_id=None, invoice_id="inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"),
            404,
            "invoice_id",
            "not_found",
            id="unknown-invoice-id",
        ),
    ],
)
async def test_refused_credit_notes_name_the_field_and_change_nothing(
    pool, client, h, invoice, body, status, field, code
):
    response = await client.post("/v1/credit-notes", json=body, headers=h.AUTH)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = {e["field"]: e.get("code") for e in response.json()["errors"]}
    assert field in errors and (code is None or errors[field] == code), errors
    assert await pool.fetchval("SELECT count(*) FROM credit_notes") == 0
    assert await pool.fetchval("SELECT balance FROM invoices") == 1000
    assert await h.outbox_events(pool) == []


@pytest.mark.parametrize(
    ("close", "status", "code"),
    [
        pytest.param(lambda h, issued: h.invoice_voided(issued, 2), "void", "invoice_closed", id="void"),
        pytest.param(
            lambda h, issued: h.invoice_written_off(issued, 2, "1000.00"),
            "written_off",
            "invoice_closed",
            id="written-off",
        ),
    ],
)
async def test_a_closed_invoice_takes_no_credit_note(pool, client, h, invoice, close, status, code):
    await h.apply(pool, close(h, invoice))
    response = await client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH)

    assert response.status_code == 409, response.text
    problem = response.json()
    assert (problem["errors"][0]["code"], problem["invoice_status"]) == (code, status)
    assert await pool.fetchval("SELECT count(*) FROM credit_notes") == 0
    assert await h.outbox_events(pool, invoice["subject"], CREDITED) == []


async def test_a_settled_invoice_takes_no_credit_note(pool, client, h, invoice):
    assert (
        await client.post("/v1/credit-notes", json=credit_note(amount="1000.00"), headers=h.AUTH)
    ).status_code == 201
    again = await client.post("/v1/credit-notes", json=credit_note(reference="CN-2", amount="1.00"), headers=h.AUTH)
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "invoice_settled"


async def test_credit_notes_are_listed_filtered_paged_and_read_one_by_one(pool, client, h, invoice):
    other = h.invoice_issued(amount_due="50.00", external_id="ACC-2")
    await h.handle_invoice(pool, other)
    for n in range(3):
        await client.post("/v1/credit-notes", json=credit_note(amount="1.00", reference=f"CN-{n}"), headers=h.AUTH)
    await client.post(
        "/v1/credit-notes", json=credit_note(invoice_external_id="ACC-2", reference="CN-X"), headers=h.AUTH
    )

    first = (await client.get("/v1/credit-notes", params={"limit": 2}, headers=h.AUTH)).json()
    rest = (
        await client.get("/v1/credit-notes", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h.AUTH)
    ).json()
    assert [c["reference"] for c in first["data"] + rest["data"]] == ["CN-0", "CN-1", "CN-2", "CN-X"]
    assert rest["next_cursor"] is None
    of_other = (await client.get("/v1/credit-notes", params={"invoice_id": other["subject"]}, headers=h.AUTH)).json()
    assert [(c["reference"], c["amount_applied"], c["settled"]) for c in of_other["data"]] == [("CN-X", "50.00", True)]

    one = first["data"][0]
    got = await client.get(f"/v1/credit-notes/{one['credit_note_id']}", headers=h.AUTH)
    assert got.status_code == 200 and got.json() == one
    for missing in ("cn_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "nope"):
        answer = await client.get(f"/v1/credit-notes/{missing}", headers=h.AUTH)
        assert answer.status_code == 404 and answer.json()["errors"][0]["field"] == "credit_note_id"
    bad_cursor = await client.get("/v1/credit-notes", params={"cursor": "nope"}, headers=h.AUTH)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["errors"][0]["field"] == "cursor"


async def test_credit_notes_need_an_api_key(pool, client, h, invoice):
    created = (await client.post("/v1/credit-notes", json=credit_note(), headers=h.AUTH)).json()
    assert (await client.get("/v1/credit-notes", headers={})).status_code == 401
    assert (await client.post("/v1/credit-notes", json=credit_note(), headers={})).status_code == 401
    assert (await client.get(f"/v1/credit-notes/{created['credit_note_id']}", headers={})).status_code == 401


async def test_the_routes_are_documented(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths["/v1/credit-notes"]["post"]["operationId"] == "createCreditNote"
    assert {"200", "201", "404", "409", "422"} <= set(paths["/v1/credit-notes"]["post"]["responses"])
    assert paths["/v1/credit-notes/{credit_note_id}"]["get"]["operationId"] == "getCreditNote"
    assert paths["/v1/write-offs"]["get"]["operationId"] == "listWriteOffs"
    assert {p["name"] for p in paths["/v1/write-offs"]["get"]["parameters"]} >= {"from", "to", "limit", "cursor"}
