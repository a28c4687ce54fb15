"""Disputes and promises to pay on a real PostgreSQL: opening, resolving and making them
(acknowledged under the fence, their events in the outbox keyed by the invoice), the rules (422
naming the field, 404, 409, nothing written), and the scheduler's verdicts on a promise."""

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dunning.clock import isoformat, utcnow
from dunning.contracts import PromiseBroken, PromiseKept
from dunning.events import envelope
from dunning.handler_table import Rejected
from dunning_ingest.repository.fence import ACK_FENCE

pytestmark = pytest.mark.integration


def today() -> date:
    return datetime.now(ZoneInfo("Europe/Berlin")).date()  # the customer's (invoice_payload: Berlin)


def day(offset: int) -> str:
    return (today() + timedelta(days=offset)).isoformat()


async def invoice(client, kit, **overrides) -> dict:
    r = await client.post("/v1/invoices", json=kit.invoice_payload(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def post(client, url: str, body: dict, status: int) -> dict:
    r = await client.post(url, json=body)
    assert r.status_code == status, r.text
    return r.json()


async def paid(pool, kit, invoice_id: str, amount: str, remaining: str) -> None:
    event = kit.event_like(
        "PaymentReceived",
        "partial-stripe-payment.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice_id,
        amount=amount,
        amount_applied=amount,
        balance_remaining=remaining,
        settled=remaining == "0.00",
        payment_id=f"pay_{utcnow().strftime('%H%M%S%f')}ABCDEFGHIJ",
        acknowledged_at=isoformat(utcnow()),
    )
    assert await kit.apply(pool, event)


# --- disputes ---------------------------------------------------------------------------------------


async def test_a_dispute_is_acknowledged_published_and_shown(client, pool, kit):
    inv = await invoice(client, kit)
    before = utcnow()
    r = await client.post(
        f"/v1/invoices/{inv['id']}/disputes",
        json={"reason": "Two licences missing", "amount": "500", "opened_by": "ar"},
    )
    assert r.status_code == 201, r.text
    dispute = r.json()
    assert r.headers["location"] == f"/v1/invoices/{inv['id']}/disputes/{dispute['dispute_id']}"
    assert (dispute["status"], dispute["disputed_amount"], dispute["currency"], dispute["outcome"]) == (
        "open",
        "500.00",
        "EUR",
        None,
    )
    assert datetime.fromisoformat(dispute["acknowledged_at"]) >= before
    [event] = await kit.outbox_events(pool, "dunning.DisputeOpened.v1", inv["id"])
    assert (event["data"]["dispute_id"], event["data"]["disputed_amount"], event["data"]["acknowledged_at"]) == (
        dispute["dispute_id"],
        "500.00",
        dispute["acknowledged_at"],
    )
    assert await pool.fetchval("SELECT topic FROM outbox WHERE event_type = 'dunning.DisputeOpened.v1'") == (
        "dunning.invoices.v1"
    )
    listed = (await client.get(f"/v1/invoices/{inv['id']}/disputes")).json()
    assert listed == {"data": [dispute]}
    detail = (await client.get(f"/v1/invoices/{inv['id']}")).json()
    assert detail["disputes"] == [dispute]
    [opened] = [e for e in detail["history"] if e["kind"] == "dispute_opened"]
    assert (opened["reference"], opened["amount"], opened["by"], opened["at"]) == (
        dispute["dispute_id"],
        "500.00",
        "ar",
        dispute["acknowledged_at"],
    )


@pytest.mark.parametrize(
    "body, field, code",
    [
        pytest.param({}, "reason", "missing", id="no-reason"),
        pytest.param({"reason": "x" * 501}, "reason", "string_too_long", id="long-reason"),
        pytest.param({"reason": "r", "amount": "1250.01"}, "amount", "amount_too_large", id="over-amount-due"),
        pytest.param({"reason": "r", "amount": "1.001"}, "amount", "amount", id="too-many-decimals"),
        pytest.param({"reason": "r", "amount": "0"}, "amount", "amount", id="zero"),
        pytest.param({"reason": "r", "amount": 12}, "amount", "string_type", id="number"),
        pytest.param({"reason": "r", "opened_by": ""}, "opened_by", "string_too_short", id="empty-by"),
        pytest.param({"reason": "r", "why": "?"}, "why", "extra_forbidden", id="unknown"),
    ],
)
async def test_a_dispute_that_cannot_be_opened_is_a_422_naming_the_field(client, pool, kit, body, field, code):
    inv = await invoice(client, kit)
    r = await client.post(f"/v1/invoices/{inv['id']}/disputes", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field and e["code"] == code for e in r.json()["errors"]), r.text
    assert await pool.fetchval("SELECT count(*) FROM disputes") == 0
    assert await kit.outbox_events(pool, "dunning.DisputeOpened.v1") == []


async def test_a_second_open_dispute_or_a_closed_invoice_is_409_and_an_unknown_one_404(client, pool, kit):
    inv = await invoice(client, kit)
    first = await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "r"}, 201)
    second = await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "again"}, 409)
    assert second["errors"][0]["code"] == "dispute_open" and second["dispute_id"] == first["dispute_id"]
    other = await invoice(client, kit)
    await paid(pool, kit, other["id"], "1250.00", "0.00")
    closed = await post(client, f"/v1/invoices/{other['id']}/disputes", {"reason": "r"}, 409)
    assert closed["errors"][0]["code"] == "invoice_closed" and closed["invoice_status"] == "paid"
    for url in ("/v1/invoices/inv_00000000000000000000000000/disputes", "/v1/invoices/x/disputes"):
        assert (await client.post(url, json={"reason": "r"})).status_code == 404
        assert (await client.get(url)).status_code == 404
    assert len(await kit.outbox_events(pool, "dunning.DisputeOpened.v1")) == 1


async def test_resolving_a_dispute_publishes_the_outcome_once(client, pool, kit):
    inv = await invoice(client, kit)
    dispute = await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "r"}, 201)
    url = f"/v1/invoices/{inv['id']}/disputes/{dispute['dispute_id']}/resolve"
    refused = await post(client, url, {"outcome": "rejected", "credit_amount": "10.00"}, 422)
    assert refused["errors"][0]["field"] == "credit_amount"
    assert (await post(client, url, {"outcome": "maybe"}, 422))["errors"][0]["field"] == "outcome"
    resolved = await post(client, url, {"outcome": "rejected", "note": "Delivery signed for", "resolved_by": "ar"}, 200)
    assert (resolved["status"], resolved["outcome"], resolved["credit_amount"], resolved["note"]) == (
        "rejected",
        "rejected",
        None,
        "Delivery signed for",
    )
    assert await post(client, url, {"outcome": "rejected"}, 200) == resolved  # a repeat: as it is
    other = await post(client, url, {"outcome": "upheld"}, 409)
    assert other["errors"][0]["code"] == "dispute_resolved"
    [event] = await kit.outbox_events(pool, "dunning.DisputeResolved.v1", inv["id"])
    assert (event["data"]["outcome"], event["data"]["credit_amount"], event["data"]["resolved_by"]) == (
        "rejected",
        None,
        "ar",
    )
    # a new dispute may be opened once the last one is resolved
    await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "again"}, 201)
    missing = f"/v1/invoices/{inv['id']}/disputes/dsp_00000000000000000000000000/resolve"
    assert (await client.post(missing, json={"outcome": "rejected"})).status_code == 404


async def test_an_upheld_dispute_credits_the_disputed_amount_or_the_balance(client, pool, kit):
    inv = await invoice(client, kit)
    part = await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "r", "amount": "500.00"}, 201)
    url = f"/v1/invoices/{inv['id']}/disputes/{part['dispute_id']}/resolve"
    too_much = await post(client, url, {"outcome": "upheld", "credit_amount": "1250.01"}, 422)
    assert too_much["errors"][0]["field"] == "credit_amount"
    upheld = await post(client, url, {"outcome": "upheld"}, 200)
    assert (upheld["status"], upheld["credit_amount"]) == ("upheld", "500.00")

    await paid(pool, kit, inv["id"], "250.00", "1000.00")
    whole = await post(client, f"/v1/invoices/{inv['id']}/disputes", {"reason": "all of it"}, 201)
    url = f"/v1/invoices/{inv['id']}/disputes/{whole['dispute_id']}/resolve"
    assert (await post(client, url, {"outcome": "upheld"}, 200))["credit_amount"] == "1000.00"  # the balance
    events = await kit.outbox_events(pool, "dunning.DisputeResolved.v1", inv["id"])
    assert [(e["data"]["outcome"], e["data"]["credit_amount"]) for e in events] == [
        ("upheld", "500.00"),
        ("upheld", "1000.00"),
    ]
    kinds = [e["kind"] for e in (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]]
    assert kinds == ["created", "dispute_opened", "dispute_resolved", "payment", "dispute_opened", "dispute_resolved"]


async def test_a_dispute_waits_for_the_fence(client, pool, kit):
    inv = await invoice(client, kit)
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", ACK_FENCE)
        request = asyncio.create_task(client.post(f"/v1/invoices/{inv['id']}/disputes", json={"reason": "r"}))
        await asyncio.sleep(0.3)
        assert not request.done()
        released = utcnow()
        await holder.execute("SELECT pg_advisory_unlock($1)", ACK_FENCE)
        r = await request
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["acknowledged_at"]) >= released


# --- promises ---------------------------------------------------------------------------------------


async def test_a_promise_is_acknowledged_published_and_shown(client, pool, kit):
    inv = await invoice(client, kit)
    r = await client.post(
        f"/v1/invoices/{inv['id']}/promises", json={"amount": "625", "date": day(7), "note": "phone", "made_by": "ar"}
    )
    assert r.status_code == 201, r.text
    promise = r.json()
    assert (promise["status"], promise["amount"], promise["currency"], promise["promised_date"]) == (
        "pending",
        "625.00",
        "EUR",
        day(7),
    )
    assert (promise["deadline"], promise["settled_at"]) == (None, None)
    [event] = await kit.outbox_events(pool, "dunning.PromiseMade.v1", inv["id"])
    data = event["data"]
    assert (data["promise_id"], data["amount"], data["promised_date"], data["acknowledged_at"]) == (
        promise["promise_id"],
        "625.00",
        day(7),
        promise["acknowledged_at"],
    )
    assert (await client.get(f"/v1/invoices/{inv['id']}/promises")).json() == {"data": [promise]}
    detail = (await client.get(f"/v1/invoices/{inv['id']}")).json()
    assert detail["promises"] == [promise]
    [made] = [e for e in detail["history"] if e["kind"] == "promise_made"]
    assert (made["reference"], made["amount"], made["data"]) == (
        promise["promise_id"],
        "625.00",
        {"promised_date": day(7)},
    )
    today_ok = await post(
        client, f"/v1/invoices/{(await invoice(client, kit))['id']}/promises", {"amount": "1", "date": day(0)}, 201
    )
    assert today_ok["promised_date"] == day(0)
    assert (promise["due_by"], today_ok["due_by"]) == (None, None)
    assert "due_by" not in data  # a promise by a day: its PromiseMade reads as before


async def test_a_promise_by_an_instant_is_dated_in_the_customers_zone_and_published_with_it(client, pool, kit):
    inv = await invoice(client, kit)
    # 23:30 UTC is already the next day in Berlin (UTC+1 or +2): the promised date is the customer's day
    by = datetime.combine(today() + timedelta(days=2), time(23, 30), UTC)
    body = {"amount": "625", "by": by.astimezone(ZoneInfo("America/New_York")).isoformat(), "made_by": "ar"}
    promise = await post(client, f"/v1/invoices/{inv['id']}/promises", body, 201)
    assert (promise["status"], promise["promised_date"], promise["due_by"]) == ("pending", day(3), isoformat(by))
    [event] = await kit.outbox_events(pool, "dunning.PromiseMade.v1", inv["id"])
    assert (event["data"]["promised_date"], event["data"]["due_by"]) == (day(3), isoformat(by))
    assert (await client.get(f"/v1/invoices/{inv['id']}/promises")).json() == {"data": [promise]}
    [made] = [
        e for e in (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"] if e["kind"] == "promise_made"
    ]
    assert made["data"] == {"promised_date": day(3), "due_by": isoformat(by)}


@pytest.mark.parametrize(
    "body, field, code",
    [
        pytest.param({"amount": "100.00", "date": "$YESTERDAY"}, "date", "in_the_past", id="yesterday"),
        pytest.param({"amount": "100.00", "date": "$NEXT_YEAR"}, "date", "too_far", id="beyond-a-year"),
        pytest.param({"amount": "100.00", "date": "10.12.2026"}, "date", None, id="not-iso"),
        pytest.param({"amount": "100.00", "date": 20261210}, "date", None, id="number-date"),
        pytest.param({"amount": "1250.01", "date": "$TOMORROW"}, "amount", "amount_too_large", id="over-balance"),
        pytest.param({"amount": "0.00", "date": "$TOMORROW"}, "amount", "amount", id="zero"),
        pytest.param({"date": "$TOMORROW"}, "amount", "missing", id="no-amount"),
        pytest.param({"amount": "1.00"}, "date", "missing", id="no-date"),
        pytest.param(
            {"amount": "1.00", "date": "$TOMORROW", "by": "$IN_AN_HOUR"}, "by", "date_or_by", id="date-and-by"
        ),
        pytest.param({"amount": "1.00", "by": "$A_SECOND_AGO"}, "by", "in_the_past", id="by-in-the-past"),
        pytest.param({"amount": "1.00", "by": "$IN_366_DAYS"}, "by", "too_far", id="by-beyond-a-year"),
        pytest.param({"amount": "1.00", "by": "2026-12-11T17:00:00"}, "by", None, id="by-without-offset"),
        pytest.param({"amount": "1.00", "by": "$TOMORROW"}, "by", None, id="by-a-date"),
        pytest.param({"amount": "1.00", "by": 1796994000}, "by", None, id="by-a-number"),
        pytest.param({"amount": "1.00", "date": "$TOMORROW", "note": "n" * 2001}, "note", "string_too_long", id="note"),
    ],
)
async def test_a_promise_that_cannot_be_made_is_a_422_naming_the_field(client, pool, kit, body, field, code):
    inv = await invoice(client, kit)
    now = utcnow()
    dates = {"$YESTERDAY": day(-1), "$NEXT_YEAR": day(366), "$TOMORROW": day(1)} | {
        "$IN_AN_HOUR": isoformat(now + timedelta(hours=1)),
        "$A_SECOND_AGO": isoformat(now - timedelta(seconds=1)),
        "$IN_366_DAYS": isoformat(now + timedelta(days=366)),
    }
    body = {k: dates.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    r = await client.post(f"/v1/invoices/{inv['id']}/promises", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field and (code is None or e["code"] == code) for e in r.json()["errors"]), r.text
    assert await pool.fetchval("SELECT count(*) FROM promises") == 0
    assert await kit.outbox_events(pool, "dunning.PromiseMade.v1") == []


async def test_a_pending_promise_an_active_plan_or_a_closed_invoice_is_409(client, pool, kit):
    inv = await invoice(client, kit)
    first = await post(client, f"/v1/invoices/{inv['id']}/promises", {"amount": "100.00", "date": day(3)}, 201)
    second = await post(client, f"/v1/invoices/{inv['id']}/promises", {"amount": "100.00", "date": day(4)}, 409)
    assert second["errors"][0]["code"] == "promise_pending" and second["promise_id"] == first["promise_id"]

    planned = await invoice(client, kit)
    plan = await post(
        client,
        f"/v1/invoices/{planned['id']}/payment-plans",
        {"instalments": [{"due_date": day(5), "amount": "1250.00"}]},
        201,
    )
    refused = await post(client, f"/v1/invoices/{planned['id']}/promises", {"amount": "1.00", "date": day(1)}, 409)
    assert refused["errors"][0]["code"] == "payment_plan_active" and refused["plan_id"] == plan["plan_id"]

    voided = await invoice(client, kit)
    assert (await client.post(f"/v1/invoices/{voided['id']}/void", json={"reason": "duplicate"})).status_code == 200
    closed = await post(client, f"/v1/invoices/{voided['id']}/promises", {"amount": "1.00", "date": day(1)}, 409)
    assert closed["errors"][0]["code"] == "invoice_closed"
    assert len(await kit.outbox_events(pool, "dunning.PromiseMade.v1")) == 1


async def test_the_schedulers_verdicts_set_the_promises_status(client, pool, kit):
    inv = await invoice(client, kit)
    url = f"/v1/invoices/{inv['id']}/promises"
    kept = await post(client, url, {"amount": "600.00", "date": day(2)}, 201)
    now = utcnow()
    record = PromiseKept(
        kept["promise_id"],
        inv["id"],
        kit.TENANT,
        "EUR",
        Decimal("600.00"),
        today() + timedelta(days=2),
        Decimal("600.00"),
        now,
    )
    assert await kit.apply(pool, envelope(record))
    broken = await post(client, url, {"amount": "650.00", "date": day(3)}, 201)  # the first is no longer pending
    deadline = now + timedelta(days=5)
    assert await kit.apply(
        pool,
        envelope(
            PromiseBroken(
                broken["promise_id"],
                inv["id"],
                kit.TENANT,
                "EUR",
                Decimal("650.00"),
                today() + timedelta(days=3),
                Decimal("0.00"),
                deadline,
                deadline,
            )
        ),
    )
    promises = (await client.get(url)).json()["data"]
    assert [(p["status"], p["paid_amount"], p["settled_at"]) for p in promises] == [
        ("kept", "600.00", isoformat(now)),
        ("broken", "0.00", isoformat(deadline)),
    ]
    assert promises[1]["deadline"] == isoformat(deadline)
    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    assert [e["kind"] for e in history] == ["created", "promise_made", "promise_kept", "promise_made", "promise_broken"]
    assert history[-1]["data"] == {"deadline": isoformat(deadline)}

    unknown = PromiseKept(
        "prm_00000000000000000000000000", inv["id"], kit.TENANT, "EUR", Decimal("1.00"), today(), Decimal("1.00"), now
    )
    with pytest.raises(Rejected):
        await kit.apply(pool, envelope(unknown))
