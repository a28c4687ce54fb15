"""The unmatched queue through the real app and PostgreSQL: a bank payment with no reference waits with
suggestions; a person allocates it by hand to two invoices (the payer's account is learnt), undoes one
allocation; the same payer's next payment of an exact open amount matches alone."""

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import pytest

from dunning.clock import utcnow
from dunning.ids import new_id
from dunning_reconciliation import match_service
from dunning_reconciliation.domain import IncomingPayment, MatchKeys

pytestmark = pytest.mark.integration

ACME = ("cus_01JD0ACME000000000000000AA", "Acme Trading GmbH")
IBAN = "DE89370400440532013000"


async def issue(pool, h, number: str, amount: str, *, due_days_ago: int, currency: str = "EUR") -> str:
    envelope = h.invoice_issued(
        number=number,
        external_id=f"ACC-{number}",
        amount_due=amount,
        currency=currency,
        due_date=date.today() - timedelta(days=due_days_ago),
    )
    envelope["data"]["customer"] |= {"customer_id": ACME[0], "name": ACME[1]}
    await h.handle_invoice(pool, envelope)
    return envelope["subject"]


async def bank_payment(pool, h, amount: str, *, remittance: str = "", payer_account: str = IBAN) -> str:
    """A bank statement's credit line, matched as the statement import does; its payment id."""
    p = IncomingPayment(
        tenant_id=h.TENANT,
        source="bank_statement",
        source_reference=new_id("line"),
        currency="EUR",
        amount=Decimal(amount),
        received_at=utcnow(),
        keys=MatchKeys(),
        payer_name="ACME TRADING AG",  # not the customer's name: only like it
        payer_account=payer_account,
        remittance=remittance,
    )
    async with pool.acquire() as conn, conn.transaction():
        await match_service.match_and_allocate(conn, [p])
    return p.payment_id


async def balance(pool, invoice_id: str) -> str:
    return f"{await pool.fetchval('SELECT balance FROM invoices WHERE invoice_id = $1', invoice_id):.2f}"


async def state(pool) -> tuple:
    """What a refused request must leave as it was."""
    return (
        await pool.fetch("SELECT invoice_id, balance, balance_version FROM invoices ORDER BY invoice_id"),
        await pool.fetch("SELECT payment_id, status, unallocated_amount FROM payments ORDER BY payment_id"),
        await pool.fetchval("SELECT count(*) FROM allocations"),
        await pool.fetchval("SELECT count(*) FROM payer_accounts"),
        await pool.fetchval("SELECT count(*) FROM outbox"),
    )


def active(view: dict) -> dict[str, str]:
    return {a["invoice_id"]: a["amount"] for a in view["allocations"] if a["unallocated_at"] is None}


async def test_the_queue_allocation_by_hand_undo_and_the_payers_next_payment(pool, client, h):
    older = await issue(pool, h, "INV-1", "120.00", due_days_ago=30)
    newer = await issue(pool, h, "INV-2", "80.00", due_days_ago=10)
    later = await issue(pool, h, "INV-3", "64.20", due_days_ago=5)
    queued = await bank_payment(pool, h, "200.00", remittance="thanks")

    listed = await client.get("/v1/payments", params={"status": "unmatched"}, headers=h.AUTH)
    assert listed.status_code == 200, listed.text
    [view] = listed.json()["data"]
    assert (view["payment_id"], view["status"], view["unallocated_amount"]) == (queued, "unmatched", "200.00")
    assert view["suggestions"] and {s["invoice_id"] for s in view["suggestions"]} <= {older, newer, later}

    body = {
        "allocations": [
            {"invoice_id": older, "amount": "120.00"},
            {"invoice_external_id": "ACC-INV-2", "amount": "80.00"},
        ],
        "reason": "the customer's e-mail names INV-1 and INV-2",
    }
    response = await client.post(f"/v1/payments/{queued}/allocations", json=body, headers=h.AUTH)
    assert response.status_code == 201, response.text
    paid = response.json()
    assert active(paid) == {older: "120.00", newer: "80.00"}
    assert {a["rule"] for a in paid["allocations"]} == {"manual"}
    assert (paid["status"], paid["unallocated_amount"]) == ("applied", "0.00")
    assert [await balance(pool, older), await balance(pool, newer)] == ["0.00", "0.00"]
    assert (await client.get("/v1/payments", params={"status": "unmatched"}, headers=h.AUTH)).json()["data"] == []
    assert await pool.fetchval("SELECT customer_id FROM payer_accounts WHERE account = $1", IBAN) == ACME[0]

    undo = next(a["allocation_id"] for a in paid["allocations"] if a["invoice_id"] == newer)
    response = await client.request(
        "DELETE", f"/v1/payments/{queued}/allocations/{undo}", json={"reason": "wrong invoice"}, headers=h.AUTH
    )
    assert response.status_code == 200, response.text
    assert active(response.json()) == {older: "120.00"}
    assert (response.json()["status"], response.json()["unallocated_amount"]) == ("partially_allocated", "80.00")
    assert await balance(pool, newer) == "80.00"
    again = await client.delete(f"/v1/payments/{queued}/allocations/{undo}", headers=h.AUTH)
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "allocation_id"
    [unallocated] = await h.outbox_events(pool, newer, "dunning.PaymentUnallocated.v1")
    assert (unallocated["data"]["reason"], unallocated["data"]["unallocated_by"]) == ("wrong invoice", "api")

    # the same payer, no reference, exactly INV-3's open amount: matched by the account learnt
    auto = await bank_payment(pool, h, "64.20")
    [view] = (await client.get("/v1/payments", params={"invoice_id": later}, headers=h.AUTH)).json()["data"]
    assert view["payment_id"] == auto and active(view) == {later: "64.20"}
    assert view["allocations"][0]["rule"] == "payer_account_amount"
    assert await balance(pool, later) == "0.00"


async def test_an_idempotency_key_replays_the_first_answer(pool, client, h):
    invoice = await issue(pool, h, "INV-1", "120.00", due_days_ago=30)
    queued = await bank_payment(pool, h, "50.00")
    body = {"allocations": [{"invoice_id": invoice, "amount": "50.00"}], "reason": "by hand"}
    headers = {**h.AUTH, "Idempotency-Key": "alloc-1"}

    first = await client.post(f"/v1/payments/{queued}/allocations", json=body, headers=headers)
    retry = await client.post(f"/v1/payments/{queued}/allocations", json=body, headers=headers)
    other = await client.post(f"/v1/payments/{queued}/allocations", json={**body, "reason": "x"}, headers=headers)

    assert first.status_code == 201, first.text
    assert retry.status_code == 200 and retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await balance(pool, invoice) == "70.00"
    assert await pool.fetchval("SELECT count(*) FROM allocations") == 1


@pytest.mark.parametrize(
    ("allocations", "field"),
    [
        pytest.param([{"invoice_id": "@A", "amount": "10.001"}], "allocations[0].amount", id="decimals"),
        pytest.param([{"invoice_id": "@A", "amount": "0"}], "allocations[0].amount", id="zero"),
        pytest.param([{"invoice_id": "@A", "amount": 10}], "allocations.0.amount", id="json-number"),
        pytest.param(
            [{"invoice_id": "@A", "amount": "10.00"}, {"invoice_id": "@B", "amount": "30.01"}],
            "allocations[1].amount",
            id="beyond-the-open-balance",
        ),
        pytest.param(
            [{"invoice_id": "@A", "amount": "100.00"}, {"invoice_id": "@C", "amount": "0.01"}],
            "allocations[1].amount",
            id="beyond-the-payments-money",
        ),
        pytest.param([{"invoice_id": "@USD", "amount": "1.00"}], "allocations[0].invoice_id", id="other-currency"),
        pytest.param([{"invoice_id": "@PAID", "amount": "1.00"}], "allocations[0].invoice_id", id="invoice-paid"),
        pytest.param(
            [{"invoice_external_id": "nope", "amount": "1.00"}], "allocations[0].invoice_external_id", id="unknown"
        ),
        pytest.param(
            [{"invoice_id": "@A", "amount": "1.00"}, {"invoice_external_id": "ACC-A", "amount": "1.00"}],
            "allocations[1].invoice_external_id",
            id="named-twice",
        ),
        pytest.param([{"amount": "1.00"}], "allocations.0", id="no-invoice"),
        pytest.param([], "allocations", id="none"),
    ],
)
async def test_a_bad_allocation_is_refused_naming_the_field_and_changes_nothing(pool, client, h, allocations, field):
    ids = {
        "@A": await issue(pool, h, "A", "100.00", due_days_ago=3),
        "@B": await issue(pool, h, "B", "30.00", due_days_ago=3),
        "@C": await issue(pool, h, "C", "30.00", due_days_ago=3),
        "@USD": await issue(pool, h, "U", "30.00", due_days_ago=3, currency="USD"),
        "@PAID": await issue(pool, h, "P", "5.00", due_days_ago=3),
    }
    await bank_payment(pool, h, "5.00", remittance="P", payer_account="DE02120300000000202051")
    queued = await bank_payment(pool, h, "100.00")
    for a in allocations:
        if a.get("invoice_id") in ids:
            a["invoice_id"] = ids[a["invoice_id"]]
    before = await state(pool)

    body = {"allocations": allocations, "reason": "by hand"}
    response = await client.post(f"/v1/payments/{queued}/allocations", json=body, headers=h.AUTH)

    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert await state(pool) == before


async def test_unknown_payments_are_404_and_a_payment_with_nothing_left_409(pool, client, h):
    invoice = await issue(pool, h, "A", "100.00", due_days_ago=3)
    paid = await bank_payment(pool, h, "10.00", remittance="A")
    body = {"allocations": [{"invoice_id": invoice, "amount": "1.00"}], "reason": "by hand"}

    unknown = await client.post("/v1/payments/pay_01JD0NOPE000000000000000/allocations", json=body, headers=h.AUTH)
    malformed = await client.post("/v1/payments/nope/allocations", json=body, headers=h.AUTH)
    nothing_left = await client.post(f"/v1/payments/{paid}/allocations", json=body, headers=h.AUTH)
    no_allocation = await client.delete(f"/v1/payments/{paid}/allocations/alc_nope", headers=h.AUTH)

    assert (unknown.status_code, malformed.status_code, nothing_left.status_code) == (404, 404, 409)
    assert no_allocation.status_code == 404 and no_allocation.json()["errors"][0]["field"] == "allocation_id"
    assert await balance(pool, invoice) == "90.00"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"status": "unmatched"}, ["queued"], id="queue"),
        pytest.param({"status": "pending_match"}, ["queued"], id="queue-by-its-api-name"),
        pytest.param({"status": "applied"}, ["matched"], id="applied"),
        pytest.param({"source": "bank_statement"}, ["matched", "queued"], id="source"),
        pytest.param({"source": "stripe"}, [], id="other-source"),
        pytest.param({"customer_id": ACME[0]}, ["matched"], id="customer"),
    ],
)
async def test_the_listing_filters(pool, client, h, params, expected):
    await issue(pool, h, "A", "100.00", due_days_ago=3)
    ids = {
        "matched": await bank_payment(pool, h, "10.00", remittance="A"),
        "queued": await bank_payment(pool, h, "7.00"),
    }
    response = await client.get("/v1/payments", params=params, headers=h.AUTH)
    assert response.status_code == 200, response.text
    names = {v: k for k, v in ids.items()}
    assert sorted(names[p["payment_id"]] for p in response.json()["data"]) == expected


@pytest.mark.parametrize("params", [{"status": "lost"}, {"source": "paypal"}], ids=["status", "source"])
async def test_an_unknown_filter_value_is_422_naming_it(client, h, params):
    response = await client.get("/v1/payments", params=params, headers=h.AUTH)
    assert response.status_code == 422 and [e["field"] for e in response.json()["errors"]] == list(params)


async def test_concurrent_retries_under_one_key_allocate_once(pool, client, h):
    invoice = await issue(pool, h, "INV-1", "120.00", due_days_ago=30)
    queued = await bank_payment(pool, h, "50.00")
    body = {"allocations": [{"invoice_id": invoice, "amount": "50.00"}], "reason": "by hand"}
    headers = {**h.AUTH, "Idempotency-Key": "alloc-race"}

    responses = await asyncio.gather(
        *(client.post(f"/v1/payments/{queued}/allocations", json=body, headers=headers) for _ in range(3))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 201]
    assert all(r.json() == responses[0].json() for r in responses)
    assert await balance(pool, invoice) == "70.00"
    assert await pool.fetchval("SELECT count(*) FROM allocations") == 1


async def test_undoing_the_allocation_that_taught_a_payer_account_forgets_it(pool, client, h):
    invoice = await issue(pool, h, "INV-1", "120.00", due_days_ago=30)
    queued = await bank_payment(pool, h, "50.00")
    body = {"allocations": [{"invoice_id": invoice, "amount": "50.00"}], "reason": "by hand"}
    paid = (await client.post(f"/v1/payments/{queued}/allocations", json=body, headers=h.AUTH)).json()
    assert await pool.fetchval("SELECT count(*) FROM payer_accounts") == 1

    allocation = paid["allocations"][0]["allocation_id"]
    undone = await client.delete(f"/v1/payments/{queued}/allocations/{allocation}", headers=h.AUTH)

    assert undone.status_code == 200 and undone.json()["status"] == "unmatched"
    assert await pool.fetchval("SELECT count(*) FROM payer_accounts") == 0
    assert await bank_payment(pool, h, "70.00") and await balance(pool, invoice) == "120.00"  # no match by it
