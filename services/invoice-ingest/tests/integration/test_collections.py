"""Collections in invoice-ingest on a real PostgreSQL, through the handler table: a call's outcome
becomes a promise (PromiseMade) or a dispute (DisputeOpened) exactly as the routes make them, a refused
one is told in the history and changes nothing, and a hand-off shows the invoice `with_agency`."""

from datetime import timedelta
from decimal import Decimal

import pytest

from dunning.clock import isoformat, utcnow

pytestmark = pytest.mark.integration
PROMISE_MADE, DISPUTE_OPENED = "dunning.PromiseMade.v1", "dunning.DisputeOpened.v1"


async def invoice(client, kit) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload())
    assert r.status_code == 201, r.text
    return r.json()


def completed(kit, iid: str, **data) -> dict:
    return kit.event_like("CallTaskCompleted", "eur-promised-to-pay.json", tenant_id=kit.TENANT, invoice_id=iid, **data)


async def history(client, iid: str, kind: str) -> list[dict]:
    body = (await client.get(f"/v1/invoices/{iid}")).json()
    return [e for e in body["history"] if e["kind"] == kind]


async def test_a_promise_on_the_call_is_made_as_the_promises_route_makes_it(client, pool, kit):
    inv = await invoice(client, kit)
    iid, day = inv["id"], (utcnow() + timedelta(days=7)).date().isoformat()
    created = kit.event_like("TaskCreated", "eur-call-stage.json", tenant_id=kit.TENANT, invoice_id=iid)
    assert await kit.apply(pool, created)
    event = completed(kit, iid, promised_amount="100.00", promised_date=day, completed_by="maria")
    assert await kit.apply(pool, event)
    assert not await kit.apply(pool, event)  # a redelivery: nothing twice

    [made] = await kit.outbox_events(pool, PROMISE_MADE, iid)
    assert made["data"]["amount"] == "100.00" and made["data"]["promised_date"] == day
    assert made["data"]["made_by"] == "maria"
    promises = (await client.get(f"/v1/invoices/{iid}/promises")).json()["data"]
    assert [(p["amount"], p["status"]) for p in promises] == [("100.00", "pending")]
    [entry] = await history(client, iid, "call_task_completed")
    assert entry["data"]["applied"] is True and entry["data"]["made"] == promises[0]["promise_id"]
    assert entry["reference"] == event["data"]["task_id"]
    assert [e["reference"] for e in await history(client, iid, "call_task_created")] == [created["data"]["task_id"]]


async def test_a_promise_over_the_balance_is_not_made_and_the_history_says_why(client, pool, kit):
    inv = await invoice(client, kit)
    iid, day = inv["id"], (utcnow() + timedelta(days=7)).date().isoformat()
    too_much = str(Decimal(inv["balance"]) + Decimal("0.01"))
    assert await kit.apply(pool, completed(kit, iid, promised_amount=too_much, promised_date=day))
    assert await kit.outbox_events(pool, PROMISE_MADE, iid) == []
    [entry] = await history(client, iid, "call_task_completed")
    assert entry["data"]["applied"] is False and "amount" in entry["reason"]


async def test_a_dispute_on_the_call_opens_the_dispute(client, pool, kit):
    inv = await invoice(client, kit)
    iid = inv["id"]
    event = kit.event_like("CallTaskCompleted", "eur-disputed.json", tenant_id=kit.TENANT, invoice_id=iid)
    assert await kit.apply(pool, event)
    [opened] = await kit.outbox_events(pool, DISPUTE_OPENED, iid)
    assert opened["data"]["reason"] == "Goods arrived damaged"
    body = (await client.get(f"/v1/invoices/{iid}")).json()
    assert [d["status"] for d in body["disputes"]] == ["open"]


async def test_a_hand_off_shows_the_invoice_with_agency_and_filterable(client, pool, kit):
    inv = await invoice(client, kit)
    iid = inv["id"]
    handed = kit.event_like(
        "InvoiceHandedToAgency",
        "eur-webhook.json",
        tenant_id=kit.TENANT,
        invoice_id=iid,
        balance=inv["balance"],
        currency=inv["currency"],
        handed_over_at=isoformat(utcnow()),
    )
    assert await kit.apply(pool, handed)
    body = (await client.get(f"/v1/invoices/{iid}")).json()
    assert body["status"] == "with_agency"
    [entry] = [e for e in body["history"] if e["kind"] == "handed_to_agency"]
    assert entry["reference"] == handed["data"]["case_id"] and entry["data"]["agency_name"] == "Nordic Collect AB"
    listed = (await client.get("/v1/invoices", params={"status": "with_agency"})).json()["data"]
    assert [i["id"] for i in listed] == [iid]
    assert iid not in [i["id"] for i in (await client.get("/v1/invoices", params={"status": "open"})).json()["data"]]
