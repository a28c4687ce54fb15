"""Holds on a real PostgreSQL: placing one on an invoice or a whole customer (acknowledged under the
fence, HoldPlaced in the outbox in the customer's lane), the rules (422 naming the field, 404, 409,
nothing written), releasing (HoldReleased once), expiry read from the clock, listing, and the
customer's active holds."""

import asyncio
import hashlib
from datetime import datetime, timedelta

import pytest

from dunning.clock import isoformat, utcnow
from dunning.outbox import LANES
from dunning_ingest.repository.fence import ACK_FENCE

pytestmark = pytest.mark.integration


async def invoice(client, kit, **overrides) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


def hold_body(**target) -> dict:
    return {"reason": "Key account: talking to them", "placed_by": "maria@acme.example", **target}


async def place(client, body: dict, status: int = 201, **kwargs) -> dict:
    r = await client.post("/v1/holds", json=body, **kwargs)
    assert r.status_code == status, r.text
    return r.json()


async def test_a_hold_on_an_invoice_is_acknowledged_published_and_shown(client, pool, kit):
    inv = await invoice(client, kit)
    before = utcnow()
    ends = isoformat(utcnow() + timedelta(days=14))
    r = await client.post("/v1/holds", json=hold_body(invoice_id=inv["id"], ends_at=ends))
    assert r.status_code == 201, r.text
    hold = r.json()
    assert r.headers["location"] == f"/v1/holds/{hold['hold_id']}"
    assert hold["hold_id"].startswith("hld_")
    assert (hold["scope"], hold["invoice_id"], hold["customer_id"]) == ("invoice", inv["id"], inv["customer"]["id"])
    assert (hold["status"], hold["ends_at"], hold["released_at"]) == ("active", ends, None)
    assert datetime.fromisoformat(hold["acknowledged_at"]) >= before

    [event] = await kit.outbox_events(pool, "dunning.HoldPlaced.v1")
    assert event["subject"] == inv["customer"]["id"] and event["source"] == "/invoice-ingest"
    data = event["data"]
    assert (data["hold_id"], data["invoice_id"], data["acknowledged_at"]) == (
        hold["hold_id"],
        inv["id"],
        hold["acknowledged_at"],
    )
    assert (data["reason"], data["placed_by"], data["ends_at"]) == (hold["reason"], hold["placed_by"], ends)
    # the customer's lane (CustomerUpdated's: outbox.lane_sql), on the customers topic, keyed by the customer
    row = await pool.fetchrow("SELECT lane, topic, key FROM outbox WHERE event_type = 'dunning.HoldPlaced.v1'")
    customer_id = inv["customer"]["id"]
    assert (row["topic"], row["key"]) == ("dunning.customers.v1", customer_id)
    assert row["lane"] == hashlib.sha256(customer_id.encode()).digest()[0] % LANES

    assert (await client.get(f"/v1/holds/{hold['hold_id']}")).json() == hold
    detail = (await client.get(f"/v1/invoices/{inv['id']}")).json()
    assert detail["holds"] == [hold]
    placed = [e for e in detail["history"] if e["kind"] == "hold_placed"]
    assert placed == [
        {
            "kind": "hold_placed",
            "at": hold["acknowledged_at"],
            "version": None,
            "changes": None,
            "reason": hold["reason"],
            "amount": None,
            "reference": hold["hold_id"],
            "by": "maria@acme.example",
            "data": {"scope": "invoice", "ends_at": ends},
        }
    ]


async def test_a_customer_hold_covers_its_invoices_present_and_future(client, pool, kit):
    first = await invoice(client, kit)
    hold = await place(client, hold_body(customer_external_id="cus_brandt"))
    assert (hold["scope"], hold["invoice_id"], hold["customer_id"]) == ("customer", None, first["customer"]["id"])
    later = await invoice(client, kit)  # the same customer (invoice_payload: cus_brandt)
    for inv in (first, later):
        assert [h["hold_id"] for h in (await client.get(f"/v1/invoices/{inv['id']}")).json()["holds"]] == [
            hold["hold_id"]
        ]
    by_id = await place(client, hold_body(customer_id=first["customer"]["id"]))
    customer = (await client.get(f"/v1/customers/{first['customer']['id']}")).json()
    assert [h["hold_id"] for h in customer["holds"]] == [hold["hold_id"], by_id["hold_id"]]
    [event, _] = await kit.outbox_events(pool, "dunning.HoldPlaced.v1")
    assert event["data"]["invoice_id"] is None and event["subject"] == first["customer"]["id"]


async def test_an_invoice_hold_by_external_id(client, kit):
    inv = await invoice(client, kit)
    hold = await place(client, hold_body(invoice_external_id=inv["external_id"]))
    assert hold["invoice_id"] == inv["id"]


@pytest.mark.parametrize(
    "body, field, code",
    [
        pytest.param(hold_body(), "invoice_id", "missing_target", id="no-target"),
        pytest.param(hold_body(invoice_id="$INV", customer_id="cus_x"), "customer_id", "one_target", id="two-targets"),
        pytest.param({"invoice_id": "$INV", "placed_by": "me"}, "reason", "missing", id="no-reason"),
        pytest.param(hold_body(invoice_id="$INV", reason="  "), "reason", "string_pattern_mismatch", id="blank-reason"),
        pytest.param(hold_body(invoice_id="$INV", reason="x" * 501), "reason", "string_too_long", id="long-reason"),
        pytest.param({"invoice_id": "$INV", "reason": "r"}, "placed_by", "missing", id="no-placed-by"),
        pytest.param(hold_body(invoice_id="$INV", placed_by="p" * 201), "placed_by", "string_too_long", id="long-by"),
        pytest.param(hold_body(invoice_id="$INV", ends_at="2020-01-01T00:00:00Z"), "ends_at", "in_the_past", id="past"),
        pytest.param(hold_body(invoice_id="$INV", ends_at="2030-01-01T00:00:00"), "ends_at", None, id="naive-end"),
        pytest.param(hold_body(invoice_id="$INV", ends_at=1893456000), "ends_at", None, id="number-end"),
        pytest.param(hold_body(invoice_id="$INV", until="2030-01-01"), "until", "extra_forbidden", id="unknown"),
    ],
)
async def test_a_hold_that_cannot_be_placed_is_a_422_naming_the_field_and_writes_nothing(
    client, pool, kit, body, field, code
):
    inv = await invoice(client, kit)
    body = {k: inv["id"] if v == "$INV" else v for k, v in body.items()}
    r = await client.post("/v1/holds", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    [error] = [e for e in r.json()["errors"] if e["field"] == field]
    assert code is None or error["code"] == code
    assert await pool.fetchval("SELECT count(*) FROM holds") == 0
    assert await kit.outbox_events(pool, "dunning.HoldPlaced.v1") == []


async def test_unknown_targets_are_404_and_a_closed_invoice_409(client, pool, kit):
    for target in (
        {"invoice_id": "inv_00000000000000000000000000"},
        {"invoice_external_id": "nope"},
        {"customer_id": "cus_00000000000000000000000000"},
        {"customer_external_id": "nope"},
    ):
        r = await client.post("/v1/holds", json=hold_body(**target))
        assert r.status_code == 404, r.text
        assert r.json()["errors"][0]["field"] == next(iter(target))
    inv = await invoice(client, kit)
    other = await client.post(
        "/v1/holds", json=hold_body(invoice_id=inv["id"]), headers={"Authorization": f"Bearer {kit.OTHER_KEY}"}
    )
    assert other.status_code == 404  # another tenant's invoice
    assert (await client.post(f"/v1/invoices/{inv['id']}/void", json={"reason": "duplicate"})).status_code == 200
    closed = await client.post("/v1/holds", json=hold_body(invoice_id=inv["id"]))
    assert closed.status_code == 409
    assert closed.json()["errors"][0] == {
        "field": "status",
        "message": f"invoice {inv['id']} is void: only an open invoice can be held",
        "code": "invoice_closed",
    }
    assert await pool.fetchval("SELECT count(*) FROM holds") == 0


async def test_releasing_a_hold_publishes_once_and_again_changes_nothing(client, pool, kit):
    inv = await invoice(client, kit)
    hold = await place(client, hold_body(invoice_id=inv["id"]))
    r = await client.delete(f"/v1/holds/{hold['hold_id']}", params={"released_by": "maria"})
    assert r.status_code == 200, r.text
    released = r.json()
    assert (released["status"], released["released_by"]) == ("released", "maria")
    assert released["released_at"] is not None
    again = await client.delete(f"/v1/holds/{hold['hold_id']}")
    assert again.status_code == 200 and again.json() == released
    [event] = await kit.outbox_events(pool, "dunning.HoldReleased.v1")
    assert event["subject"] == inv["customer"]["id"]
    assert (event["data"]["hold_id"], event["data"]["released_by"], event["data"]["released_at"]) == (
        hold["hold_id"],
        "maria",
        released["released_at"],
    )
    kinds = [e["kind"] for e in (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]]
    assert kinds == ["created", "hold_placed", "hold_released"]
    assert (await client.delete("/v1/holds/hld_00000000000000000000000000")).status_code == 404
    assert (await client.delete("/v1/holds/nonsense")).status_code == 404


async def test_a_hold_past_its_end_reads_expired_and_is_not_released(client, pool, kit):
    inv = await invoice(client, kit)
    hold = await place(client, hold_body(invoice_id=inv["id"], ends_at=isoformat(utcnow() + timedelta(seconds=1))))
    await asyncio.sleep(1.1)
    assert (await client.get(f"/v1/holds/{hold['hold_id']}")).json()["status"] == "expired"
    r = await client.delete(f"/v1/holds/{hold['hold_id']}")
    assert r.status_code == 200 and r.json()["status"] == "expired" and r.json()["released_at"] is None
    assert await kit.outbox_events(pool, "dunning.HoldReleased.v1") == []
    detail = (await client.get(f"/v1/invoices/{inv['id']}")).json()
    assert [e["kind"] for e in detail["history"]] == ["created", "hold_placed", "hold_expired"]
    assert detail["history"][-1]["at"] == hold["ends_at"]
    customer = (await client.get(f"/v1/customers/{inv['customer']['id']}")).json()
    assert customer["holds"] == []  # active ones only


async def test_holds_list_newest_first_filtered_and_paged(client, kit):
    inv = await invoice(client, kit)
    other = await invoice(client, kit, customer={**kit.invoice_payload()["customer"], "external_id": "cus_other"})
    on_invoice = await place(client, hold_body(invoice_id=inv["id"]))
    on_customer = await place(client, hold_body(customer_id=inv["customer"]["id"]))
    on_other = await place(client, hold_body(invoice_id=other["id"]))
    await client.delete(f"/v1/holds/{on_invoice['hold_id']}")

    def ids(r) -> list[str]:
        assert r.status_code == 200, r.text
        return [h["hold_id"] for h in r.json()["data"]]

    assert ids(await client.get("/v1/holds")) == [on_other["hold_id"], on_customer["hold_id"], on_invoice["hold_id"]]
    assert ids(await client.get("/v1/holds", params={"status": "active"})) == [
        on_other["hold_id"],
        on_customer["hold_id"],
    ]
    assert ids(await client.get("/v1/holds", params={"status": "released"})) == [on_invoice["hold_id"]]
    assert ids(await client.get("/v1/holds", params={"invoice_id": inv["id"]})) == [
        on_customer["hold_id"],
        on_invoice["hold_id"],
    ]
    assert ids(await client.get("/v1/holds", params={"customer_id": other["customer"]["id"]})) == [on_other["hold_id"]]
    first = await client.get("/v1/holds", params={"limit": 2})
    assert ids(first) == [on_other["hold_id"], on_customer["hold_id"]]
    rest = await client.get("/v1/holds", params={"limit": 2, "cursor": first.json()["next_cursor"]})
    assert ids(rest) == [on_invoice["hold_id"]] and rest.json()["next_cursor"] is None
    assert (await client.get("/v1/holds", params={"status": "paused"})).status_code == 422
    assert (await client.get("/v1/holds", params={"cursor": "nonsense"})).status_code == 400
    foreign = await client.get("/v1/holds", headers={"Authorization": f"Bearer {kit.OTHER_KEY}"})
    assert foreign.json()["data"] == []


async def test_the_acknowledgement_waits_for_the_fence(client, pool, kit):
    """A hold is acknowledged under invoice-ingest's fence: while it is held exclusively (as the
    watermark publisher could), the request waits, and its acknowledged_at is after the fence was let go."""
    inv = await invoice(client, kit)
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", ACK_FENCE)
        request = asyncio.create_task(client.post("/v1/holds", json=hold_body(invoice_id=inv["id"])))
        await asyncio.sleep(0.3)
        assert not request.done()
        released = utcnow()
        await holder.execute("SELECT pg_advisory_unlock($1)", ACK_FENCE)
        r = await request
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["acknowledged_at"]) >= released


async def test_an_idempotency_key_replays_the_first_hold(client, pool, kit):
    inv = await invoice(client, kit)
    headers = {"Idempotency-Key": "hold-1"}
    first = await client.post("/v1/holds", json=hold_body(invoice_id=inv["id"]), headers=headers)
    again = await client.post("/v1/holds", json=hold_body(invoice_id=inv["id"]), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    other = await client.post("/v1/holds", json=hold_body(invoice_id=inv["id"], reason="other"), headers=headers)
    assert other.status_code == 422
    assert await pool.fetchval("SELECT count(*) FROM holds") == 1
