"""A customer's reply (CustomerReplied from the notifier) on a real PostgreSQL: an entry of the
invoice's history; with the tenant's pause, a hold through the holds service (HoldPlaced in the
outbox, ending pause_days later); an automatic reply or a closed invoice never pauses."""

from datetime import datetime, timedelta

import pytest

from dunning.clock import utcnow
from dunning.contracts import CustomerReplied
from dunning.events import envelope
from dunning.ids import new_id

pytestmark = pytest.mark.integration


async def invoice(client, kit) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload())
    assert r.status_code == 201, r.text
    return r.json()


def replied(inv: dict, kit, *, auto: bool = False, pause_days: int | None = 7) -> CustomerReplied:
    return CustomerReplied(
        new_id("rpl"),
        new_id("dlv"),
        inv["id"],
        kit.TENANT,
        inv["customer"]["id"],
        "soft",
        "email",
        "ap@customer.example",
        "Out of Office: reminder" if auto else "Re: your reminder",
        "We paid yesterday, please check.",
        auto,
        None if auto else pause_days,
        utcnow(),
    )


async def test_a_reply_is_on_the_history_and_pauses_dunning_when_the_tenant_asks(client, pool, kit):
    inv = await invoice(client, kit)
    event = replied(inv, kit, pause_days=5)
    env = envelope(event)
    assert await kit.apply(pool, env)
    await kit.apply(pool, env)  # a redelivery (same event id): the inbox keeps it out

    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    [entry] = [e for e in history if e["kind"] == "customer_replied"]
    assert entry["reference"] == event.reply_id
    assert entry["data"]["excerpt"] == "We paid yesterday, please check."
    assert entry["reason"] == "reply from ap@customer.example: Re: your reminder"

    [placed] = await kit.outbox_events(pool, "dunning.HoldPlaced.v1")
    assert placed["data"]["invoice_id"] == inv["id"] and placed["data"]["reason"] == "customer_replied"
    ends = datetime.fromisoformat(placed["data"]["ends_at"])
    assert abs((ends - (event.received_at + timedelta(days=5))).total_seconds()) < 1


async def test_an_auto_reply_is_shown_but_never_pauses(client, pool, kit):
    inv = await invoice(client, kit)
    assert await kit.apply(pool, envelope(replied(inv, kit, auto=True)))
    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    [entry] = [e for e in history if e["kind"] == "customer_replied"]
    assert entry["data"]["auto_reply"] is True and entry["reason"].startswith("automatic reply")
    assert await kit.outbox_events(pool, "dunning.HoldPlaced.v1") == []


async def test_a_reply_to_a_voided_invoice_is_recorded_without_a_hold(client, pool, kit):
    inv = await invoice(client, kit)
    r = await client.post(f"/v1/invoices/{inv['id']}/void", json={"reason": "duplicate"})
    assert r.status_code in (200, 201), r.text
    assert await kit.apply(pool, envelope(replied(inv, kit)))
    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    assert [e["kind"] for e in history if e["kind"] == "customer_replied"] == ["customer_replied"]
    assert await kit.outbox_events(pool, "dunning.HoldPlaced.v1") == []
