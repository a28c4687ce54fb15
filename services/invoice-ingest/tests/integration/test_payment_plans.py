"""Payment plans on a real PostgreSQL: agreeing one over an invoice or several of a customer's
(acknowledged under the fence, PaymentPlanAgreed in the outbox), the rules a plan must meet (422
naming the field, 404, 409, nothing written), payments covering instalments in order, the
scheduler's verdicts setting the plan's status, cancelling, listing."""

import asyncio
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dunning.clock import isoformat, utcnow
from dunning.contracts import InstalmentMissed, PaymentPlanBroken, PaymentPlanCompleted
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


async def plan_for(client, invoice_id: str, body: dict, status: int = 201) -> dict:
    r = await client.post(f"/v1/invoices/{invoice_id}/payment-plans", json=body)
    assert r.status_code == status, r.text
    return r.json()


def listed(*amounts: str, start: int = 5, step: int = 30) -> dict:
    return {"instalments": [{"due_date": day(start + i * step), "amount": a} for i, a in enumerate(amounts)]}


async def paid(pool, kit, invoice_id: str, amount: str, remaining: str) -> None:
    event = kit.event_like(
        "PaymentReceived",
        "partial-stripe-payment.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice_id,
        amount=amount,
        amount_applied=amount,
        balance_remaining=remaining,
        payment_id=f"pay_{utcnow().strftime('%H%M%S%f')}ABCDEFGHIJ",
        acknowledged_at=isoformat(utcnow()),
    )
    assert await kit.apply(pool, event)


async def test_a_plan_over_an_invoice_is_acknowledged_and_published(client, pool, kit):
    inv = await invoice(client, kit)  # 1250.00 EUR
    before = utcnow()
    body = await plan_for(client, inv["id"], {**listed("600.00", "650.00"), "agreed_by": "j.doe@acme.example"})
    assert body["plan_id"].startswith("pln_") and body["status"] == "active"
    assert (body["customer_id"], body["currency"], body["total"], body["paid"]) == (
        inv["customer"]["id"],
        "EUR",
        "1250.00",
        "0.00",
    )
    assert body["invoices"] == [
        {"invoice_id": inv["id"], "external_id": inv["external_id"], "balance": "1250.00", "current_balance": "1250.00"}
    ]
    assert [(i["number"], i["amount"], i["paid"], i["status"]) for i in body["instalments"]] == [
        (1, "600.00", "0.00", "due"),
        (2, "650.00", "0.00", "due"),
    ]
    assert before <= datetime.fromisoformat(body["acknowledged_at"]) <= utcnow()

    [event] = await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1")
    data = event["data"]
    assert event["subject"] == inv["customer"]["id"] and event["tenantid"] == kit.TENANT
    assert data["plan_id"] == body["plan_id"] and data["acknowledged_at"] == body["acknowledged_at"]
    assert data["invoices"] == [{"invoice_id": inv["id"], "balance": "1250.00"}]
    assert data["instalments"] == [
        {"number": 1, "due_date": day(5), "amount": "600.00"},
        {"number": 2, "due_date": day(35), "amount": "650.00"},
    ]
    assert (data["total"], data["agreed_by"]) == ("1250.00", "j.doe@acme.example")
    row = await pool.fetchrow("SELECT topic, key FROM outbox WHERE event_id = $1", uuid.UUID(event["id"]))
    assert (row["topic"], row["key"]) == ("dunning.customers.v1", inv["customer"]["id"])

    got = await client.get(f"/v1/payment-plans/{body['plan_id']}")
    assert got.status_code == 200 and got.json() == body


async def test_count_and_interval_split_evenly_with_the_remainder_last_and_months_clamped(client, kit):
    inv = await invoice(client, kit)
    first = date(today().year + 1, 1, 31)
    body = await plan_for(client, inv["id"], {"count": 3, "first_due_date": first.isoformat(), "interval": "P1M"})
    assert [(i["due_date"], i["amount"]) for i in body["instalments"]] == [
        (first.isoformat(), "416.66"),
        (date(first.year, 2, 28).isoformat(), "416.66"),
        (date(first.year, 3, 31).isoformat(), "416.68"),
    ]
    weekly = await invoice(client, kit, currency="JPY", amount_due="1000")
    body = await plan_for(client, weekly["id"], {"count": 3, "first_due_date": day(0), "interval": "P2W"})
    assert [(i["due_date"], i["amount"]) for i in body["instalments"]] == [
        (day(0), "333"),
        (day(14), "333"),
        (day(28), "334"),
    ]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        pytest.param(listed("600.00", "600.00"), "instalments", "sum_mismatch", id="sum-not-the-balance"),
        pytest.param(listed("600.00", "650.00", step=0), "instalments.1.due_date", "not_increasing", id="same-day"),
        pytest.param(listed("600.00", "650.00", start=-1), "instalments.0.due_date", "in_the_past", id="past"),
        pytest.param(listed("600.001", "649.999"), "instalments.0.amount", "invalid_amount", id="sub-cent"),
        pytest.param(listed("0", "1250.00"), "instalments.0.amount", "invalid_amount", id="zero"),
        pytest.param(
            {"instalments": [{"due_date": day(3), "amount": 1250}]}, "instalments.0.amount", "value_error", id="number"
        ),
        pytest.param({**listed("1250.00"), "count": 2}, "count", "either", id="both-forms"),
        pytest.param(
            {"instalments": [{"due_date": 1800000000, "amount": "1250.00"}]},
            "instalments.0.due_date",
            "value_error",
            id="date-as-number",
        ),
        pytest.param({"count": 2, "first_due_date": day(3)}, "interval", "missing", id="no-interval"),
        pytest.param({}, "count", "missing", id="nothing"),
        pytest.param({"count": 2, "first_due_date": day(3), "interval": "PT1H"}, "interval", "invalid_interval"),
        pytest.param({"count": 2, "first_due_date": day(3), "interval": "P0D"}, "interval", "invalid_interval"),
        pytest.param({"count": 37, "first_due_date": day(3), "interval": "P1M"}, "count", "less_than_equal"),
        pytest.param(listed(*["10.00"] * 37), "instalments", "too_long", id="37-instalments"),
        pytest.param({"count": 2, "first_due_date": day(-1), "interval": "P1M"}, "first_due_date", "in_the_past"),
        pytest.param({**listed("1250.00"), "extra": 1}, "extra", "extra_forbidden", id="unknown-field"),
    ],
)
async def test_a_plan_that_cannot_be_agreed_is_a_422_naming_the_field_and_writes_nothing(
    client, pool, kit, body, field, code
):
    inv = await invoice(client, kit)
    problem = await plan_for(client, inv["id"], body, status=422)
    assert [(e["field"], e["code"]) for e in problem["errors"]][:1] == [(field, code)], problem
    assert await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1") == []
    assert await pool.fetchval("SELECT count(*) FROM payment_plans") == 0


async def test_an_invoice_in_an_active_plan_or_not_open_or_unknown_is_refused(client, pool, kit):
    inv = await invoice(client, kit)
    first = await plan_for(client, inv["id"], listed("1250.00"))
    again = await plan_for(client, inv["id"], listed("1250.00"), status=409)
    assert again["errors"][0]["code"] == "payment_plan_active" and again["plan_id"] == first["plan_id"]

    void = await invoice(client, kit)
    assert (await client.post(f"/v1/invoices/{void['id']}/void", json={"reason": "dup"})).status_code == 200
    closed = await plan_for(client, void["id"], listed("1250.00"), status=409)
    assert closed["errors"][0] == {
        "field": "invoice_id",
        "message": f"invoice {void['id']} is void: only open invoices",
        "code": "invoice_closed",
    }
    missing = await plan_for(client, "inv_01JDQ4ZK3M8X2V6T9R5W7Y1B0C", listed("1250.00"), status=404)
    assert missing["errors"][0]["field"] == "invoice_id"
    other = await client.post(
        f"/v1/invoices/{inv['id']}/payment-plans",
        json=listed("1250.00"),
        headers={"Authorization": f"Bearer {kit.OTHER_KEY}"},
    )
    assert other.status_code == 404
    assert len(await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1")) == 1


async def test_a_plan_and_a_pending_promise_exclude_each_other(client, pool, kit):
    promised = await invoice(client, kit)
    r = await client.post(f"/v1/invoices/{promised['id']}/promises", json={"amount": "1250.00", "date": day(7)})
    assert r.status_code == 201, r.text
    problem = await plan_for(client, promised["id"], listed("1250.00"), status=409)
    assert (problem["errors"][0]["field"], problem["errors"][0]["code"]) == ("invoice_id", "promise_pending")
    assert problem["promise_id"] == r.json()["promise_id"]

    planned = await invoice(client, kit)
    plan = await plan_for(client, planned["id"], listed("1250.00"))
    refused = await client.post(f"/v1/invoices/{planned['id']}/promises", json={"amount": "100.00", "date": day(7)})
    assert refused.status_code == 409 and refused.json()["plan_id"] == plan["plan_id"]
    assert len(await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1")) == 1


async def test_a_plan_over_several_invoices_of_one_customer(client, pool, kit):
    a, b = await invoice(client, kit), await invoice(client, kit, amount_due="750.00")
    customer_id = a["customer"]["id"]
    r = await client.post(
        "/v1/payment-plans",
        json={
            "customer_id": customer_id,
            "invoice_ids": [b["id"], a["id"]],
            "count": 4,
            "first_due_date": day(1),
            "interval": "P1M",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/payment-plans/{body['plan_id']}"
    assert body["total"] == "2000.00" and [i["invoice_id"] for i in body["invoices"]] == [b["id"], a["id"]]
    assert [i["amount"] for i in body["instalments"]] == ["500.00"] * 4
    [event] = await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1")
    assert [i["invoice_id"] for i in event["data"]["invoices"]] == [b["id"], a["id"]]  # the first carries the reminders

    someone_else = await invoice(
        client, kit, customer={**kit.invoice_payload()["customer"], "external_id": "cus_other"}
    )
    dollars = await invoice(client, kit, currency="USD")
    cases = [
        ({"customer_id": customer_id, "invoice_ids": [someone_else["id"]]}, 422, "invoice_ids.0", "other_customer"),
        (
            {"customer_id": customer_id, "invoice_ids": [a["id"]]},
            409,
            "invoice_ids.0",
            "payment_plan_active",
        ),
        (
            {"customer_id": customer_id, "invoice_ids": [dollars["id"], dollars["id"]]},
            422,
            "invoice_ids.1",
            "duplicate",
        ),
        (
            {"customer_id": "cus_01JDQ4ZK3M8X2V6T9R5W7Y1B0C", "invoice_ids": [dollars["id"]]},
            404,
            "customer_id",
            "not_found",
        ),
        ({"customer_id": customer_id, "invoice_ids": []}, 422, "invoice_ids", "too_short"),
    ]
    fresh = await invoice(client, kit)
    cases.append(
        (
            {"customer_id": customer_id, "invoice_ids": [fresh["id"], dollars["id"]]},
            422,
            "invoice_ids.1",
            "currency_mismatch",
        )
    )
    for ask, status, field, code in cases:
        r = await client.post("/v1/payment-plans", json={**ask, **listed("1.00")})
        assert r.status_code == status, (ask, r.text)
        assert (r.json()["errors"][0]["field"], r.json()["errors"][0]["code"]) == (field, code), r.text
    assert len(await kit.outbox_events(pool, "dunning.PaymentPlanAgreed.v1")) == 1


async def test_payments_cover_the_instalments_in_order(client, pool, kit):
    inv = await invoice(client, kit)
    plan = await plan_for(client, inv["id"], listed("400.00", "400.00", "450.00"))
    await paid(pool, kit, inv["id"], "500.00", "750.00")
    body = (await client.get(f"/v1/payment-plans/{plan['plan_id']}")).json()
    assert [(i["paid"], i["status"]) for i in body["instalments"]] == [
        ("400.00", "paid"),
        ("100.00", "due"),
        ("0.00", "due"),
    ]
    assert (body["paid"], body["remaining"], body["invoices"][0]["current_balance"]) == ("500.00", "750.00", "750.00")


async def test_the_acknowledgement_waits_for_the_fence(client, pool, kit):
    """A plan is acknowledged under invoice-ingest's fence: while the watermark publisher would hold
    it exclusively, the request waits, and its acknowledged_at is after the fence was let go."""
    inv = await invoice(client, kit)
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", ACK_FENCE)
        request = asyncio.create_task(client.post(f"/v1/invoices/{inv['id']}/payment-plans", json=listed("1250.00")))
        await asyncio.sleep(0.3)
        assert not request.done()
        released = utcnow()
        await holder.execute("SELECT pg_advisory_unlock($1)", ACK_FENCE)
        r = await request
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["acknowledged_at"]) >= released


async def _verdict(pool, kit, record) -> None:
    assert await kit.apply(pool, envelope(record))


async def test_the_schedulers_verdicts_set_the_plans_status(client, pool, kit):
    inv = await invoice(client, kit)
    plan = await plan_for(client, inv["id"], listed("600.00", "650.00"))
    plan_id, customer_id, now = plan["plan_id"], inv["customer"]["id"], utcnow()
    missed = InstalmentMissed(
        plan_id,
        kit.TENANT,
        customer_id,
        1,
        today() + timedelta(days=5),
        Decimal("600.00"),
        "EUR",
        Decimal("0.00"),
        now,
        now,
    )
    await _verdict(pool, kit, missed)
    await _verdict(
        pool, kit, PaymentPlanBroken(plan_id, kit.TENANT, customer_id, (inv["id"],), 1, "EUR", Decimal("1250.00"), now)
    )
    body = (await client.get(f"/v1/payment-plans/{plan_id}")).json()
    assert (body["status"], body["missed_instalment"], body["ended_at"]) == ("broken", 1, isoformat(now))
    assert [i["status"] for i in body["instalments"]] == ["missed", "due"]
    # a broken plan frees its invoice for a new plan; it cannot be cancelled
    assert (await client.delete(f"/v1/payment-plans/{plan_id}")).status_code == 409
    second = await plan_for(client, inv["id"], listed("1250.00"))
    await _verdict(
        pool,
        kit,
        PaymentPlanCompleted(
            second["plan_id"], kit.TENANT, customer_id, (inv["id"],), "EUR", Decimal("1250.00"), utcnow()
        ),
    )
    assert (await client.get(f"/v1/payment-plans/{second['plan_id']}")).json()["status"] == "completed"

    # the invoice's history shows the plan agreed, the instalment missed and the plan broken, then the next plan
    history = (await client.get(f"/v1/invoices/{inv['id']}")).json()["history"]
    assert [(e["kind"], e["reference"]) for e in history if "plan" in e["kind"] or "instalment" in e["kind"]] == [
        ("payment_plan_agreed", plan_id),
        ("instalment_missed", plan_id),
        ("payment_plan_broken", plan_id),
        ("payment_plan_agreed", second["plan_id"]),
        ("payment_plan_completed", second["plan_id"]),
    ]

    # another tenant's plan id is refused (dead-lettered), not applied
    foreign = PaymentPlanCompleted(plan_id, kit.OTHER_TENANT, customer_id, (inv["id"],), "EUR", Decimal("1250.00"), now)
    with pytest.raises(Rejected):
        await _verdict(pool, kit, foreign)


async def test_cancelling_a_plan_publishes_once_and_a_second_cancel_changes_nothing(client, pool, kit):
    inv = await invoice(client, kit)
    plan = await plan_for(client, inv["id"], listed("1250.00"))
    url = f"/v1/payment-plans/{plan['plan_id']}"
    r = await client.delete(url, params={"cancelled_by": "j.doe@acme.example", "reason": "customer asked"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["cancelled_by"], body["cancel_reason"]) == (
        "cancelled",
        "j.doe@acme.example",
        "customer asked",
    )
    again = await client.delete(url)
    assert again.status_code == 200 and again.json() == body
    [event] = await kit.outbox_events(pool, "dunning.PaymentPlanCancelled.v1")
    assert event["subject"] == inv["customer"]["id"]
    assert (event["data"]["invoice_ids"], event["data"]["reason"]) == ([inv["id"]], "customer asked")
    assert (await client.delete("/v1/payment-plans/pln_01JDQ4ZK3M8X2V6T9R5W7Y1B0C")).status_code == 404
    assert (await client.delete("/v1/payment-plans/nope")).status_code == 404
    await plan_for(client, inv["id"], listed("1250.00"))  # the invoice is free again


async def test_plans_list_newest_first_filtered_and_paged(client, kit):
    invoices = [await invoice(client, kit) for _ in range(3)]
    ids = [(await plan_for(client, i["id"], listed("1250.00")))["plan_id"] for i in invoices]
    await client.delete(f"/v1/payment-plans/{ids[1]}")
    first = (await client.get("/v1/payment-plans", params={"limit": 2})).json()
    assert [p["plan_id"] for p in first["data"]] == [ids[2], ids[1]] and first["next_cursor"]
    rest = (await client.get("/v1/payment-plans", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [p["plan_id"] for p in rest["data"]] == [ids[0]] and rest["next_cursor"] is None
    active = (await client.get("/v1/payment-plans", params={"status": "active"})).json()
    assert [p["plan_id"] for p in active["data"]] == [ids[2], ids[0]]
    customer_id = invoices[0]["customer"]["id"]
    mine = (await client.get("/v1/payment-plans", params={"customer_id": customer_id})).json()
    assert len(mine["data"]) == 3
    assert (await client.get("/v1/payment-plans", params={"customer_id": "cus_nobody000000"})).json()["data"] == []
    bad = await client.get("/v1/payment-plans", params={"status": "pending"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
