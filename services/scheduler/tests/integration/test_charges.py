"""Late charges at firing, on a real PostgreSQL: a stage's late fee and interest assessed once (the
shared brief's hand cases to the cent), quoted on StageEscalated.charges; a waiver stops further
charges; a stage below the policy's minimum balance after a partial payment is skipped at firing;
the reference rates and charges routes."""

from datetime import UTC, date, datetime, timedelta

import httpx
import orjson
import pytest

from dunning.clock import utcnow
from dunning_scheduler import charges_api
from dunning_scheduler.api import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def h(firing_h):
    return firing_h


ESCALATED, DEFERRED = "dunning.StageEscalated.v1", "dunning.StageDeferred.v1"
NOTICE, ASSESSED = "dunning.NoticeComposed.v1", "dunning.LateChargesAssessed.v1"
RESCHEDULED, WAIVED = "dunning.StagesRescheduled.v1", "dunning.LateChargesWaived.v1"
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"  # the helpers' customer


NOW = {"anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT0S", "channels": ["email", "sms"]}]}


def charging(*, rate: str = "10.15", second: bool = False) -> dict:
    stages = [{"name": "soft", "offset": "PT0S", "late_fee": {"EUR": "40.00"}, "charge_interest": True}]
    if second:
        stages.append({"name": "firm", "offset": "PT1H", "late_fee": {"EUR": "40.00"}, "charge_interest": True})
    return {"anchor": "issued_at", "interest": {"annual_rate": rate, "day_count": "ACT/365F"}, "stages": stages}


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    if not any(getattr(r, "path", "") == "/v1/reference-rates" for r in app.routes):
        charges_api.add_routes(app, pool, settings)  # until api.py wires it
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


async def overdue_30_days(pool, h, **kwargs) -> dict:
    """1000.00 EUR due 30 days ago (customer in UTC): interest runs from the day after through today."""
    today = utcnow().date()
    return await h.issue(pool, amount_due="1000.00", due_date=today - timedelta(days=30), timezone="UTC", **kwargs)


async def test_fee_and_interest_assessed_at_the_stage_match_the_hand_case(pool, h):
    await h.use_policy(pool, h.TENANT, charging())
    invoice = await overdue_30_days(pool, h)
    assert await h.fire(pool) == 1
    [assessed] = await h.outbox_events(pool, ASSESSED, invoice["subject"])
    d = assessed["data"]
    today = utcnow().date()
    # 30 days x 1000.00 x 10.15 % / 365 = 8.342... -> 8.34
    assert (d["late_fee"], d["interest"], d["total_late_fees"], d["total_interest"]) == (
        "40.00",
        "8.34",
        "40.00",
        "8.34",
    )
    assert d["interest_from"] == (today - timedelta(days=29)).isoformat() and d["interest_to"] == today.isoformat()
    assert d["day_count"] == "ACT/365F" and [p["days"] for p in d["periods"]] == [30]
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice["subject"])
    assert escalated["data"]["charges"] == {
        "currency": "EUR", "late_fee": "40.00", "interest": "8.34", "total_late_fees": "40.00",
        "total_interest": "8.34", "total_due": "1048.34", "interest_to": today.isoformat(), "day_count": "ACT/365F",
        "annual_rate": "10.15",
    }  # fmt: skip


async def test_a_partial_payment_lowers_the_interest_from_its_day(pool, h):
    await h.use_policy(pool, h.TENANT, charging())
    invoice = await overdue_30_days(pool, h)
    today = utcnow().date()
    paid_on = datetime.combine(today - timedelta(days=15), datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    await h.apply(pool, h.payment_received(invoice["subject"], balance="600.00", settled=False, amount="400.00",
                                           acknowledged_at=paid_on))  # fmt: skip
    assert await h.fire(pool) == 1
    [assessed] = await h.outbox_events(pool, ASSESSED, invoice["subject"])
    # 14 days x 1000.00 + 16 days x 600.00 at 10.15 % / 365 = 3.893 + 2.670 = 6.56
    assert assessed["data"]["interest"] == "6.56"
    assert [(p["days"], p["principal"]) for p in assessed["data"]["periods"]] == [(14, "1000.00"), (16, "600.00")]
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice["subject"])
    assert escalated["data"]["charges"]["total_due"] == "646.56"


async def test_a_waiver_stops_further_charges(pool, h, client):
    await h.use_policy(pool, h.TENANT, charging(second=True))
    invoice = await overdue_30_days(pool, h)
    invoice_id = invoice["subject"]
    assert await h.fire(pool) == 1  # soft: 40.00 + 8.34
    [soft] = await h.outbox_events(pool, ESCALATED, invoice_id)
    [firm_timer] = [t for t in await h.timers(pool, invoice_id) if t["stage"] == "firm"]
    on = firm_timer["scheduled_at"].astimezone(UTC).date().isoformat()  # the customer is in UTC
    assert soft["data"]["context"] == {"kind": "stage", "next_stage": "firm", "next_stage_on": on}
    body = (await client.get(f"/v1/invoices/{invoice_id}/charges")).json()
    assert (body["late_fees"], body["interest"], body["waived"]) == ("40.00", "8.34", None)
    assert body["accrued_interest"] == "8.34" and body["annual_rate"] == "10.15"

    waive = {"reason": "goodwill", "waived_by": "jane@acme.example"}
    first = await client.post(f"/v1/invoices/{invoice_id}/charges/waive", json=waive)
    assert first.status_code == 201, first.text
    assert (first.json()["late_fees"], first.json()["interest"]) == ("40.00", "8.34")
    again = await client.post(f"/v1/invoices/{invoice_id}/charges/waive", json={**waive, "reason": "other"})
    assert again.status_code == 200 and again.json() == first.json()
    [waived] = await h.outbox_events(pool, WAIVED, invoice_id)
    assert (waived["data"]["late_fees"], waived["data"]["interest"], waived["data"]["reason"]) == (
        "40.00",
        "8.34",
        "goodwill",
    )

    await h.make_due(pool, invoice_id, "firm")
    assert await h.fire(pool) == 1
    assert len(await h.outbox_events(pool, ASSESSED, invoice_id)) == 1  # none for firm
    firm = [e for e in await h.outbox_events(pool, ESCALATED, invoice_id) if e["data"]["stage"] == "firm"]
    assert firm and firm[0]["data"].get("charges") is None
    body = (await client.get(f"/v1/invoices/{invoice_id}/charges")).json()
    assert body["waived"]["waived_by"] == "jane@acme.example" and body["accrued_interest"] is None
    missing = await client.post("/v1/invoices/inv_01JB2F7H9K3M5N7P9Q1R3S5T00/charges/waive", json=waive)
    assert missing.status_code == 404
    bad = await client.post(f"/v1/invoices/{invoice_id}/charges/waive", json={"waived_by": "x"})
    assert bad.status_code == 422 and "reason" in bad.text


async def test_below_the_minimum_balance_after_a_partial_payment_the_stage_is_skipped(pool, h):
    await h.use_policy(pool, h.TENANT, {"anchor": "issued_at", "minimum_balance": {"EUR": "100.00"},
                                      "stages": [{"name": "soft", "offset": "PT5M"}]})  # fmt: skip
    invoice = await h.issue(pool, amount_due="1000.00")
    invoice_id = invoice["subject"]
    await h.apply(pool, h.payment_received(invoice_id, balance="50.00", settled=False, amount="950.00"))
    await h.make_due(pool, invoice_id)
    assert await h.fire(pool) == 0
    [timer] = await h.timers(pool, invoice_id)
    assert (timer["state"], timer["reason"]) == ("skipped", "below_minimum_balance")
    assert await h.outbox_events(pool, ESCALATED, invoice_id) == []
    rows = await pool.fetch("SELECT payload FROM outbox")
    events = [orjson.loads(bytes(r["payload"])) for r in rows]
    [dropped] = [e for e in events if e["type"] == RESCHEDULED and e["subject"] == invoice_id]
    assert dropped["data"]["reason"] == "below_minimum_balance"
    assert [(s["stage"], s["scheduled_at"], s["state"]) for s in dropped["data"]["stages"]] == [
        ("soft", None, "skipped")
    ]


async def test_reference_rates_routes(client):
    listed = (await client.get("/v1/reference-rates")).json()["reference_rates"]
    [ecb] = [r for r in listed if r["name"] == "ecb_main_refinancing"]
    assert ecb["own"] is False
    periods = (await client.get("/v1/reference-rates/ecb_main_refinancing")).json()["periods"]
    assert {"valid_from": "2025-06-11", "rate": "2.15", "source": "shared"} in periods
    assert {"valid_from": "2024-09-18", "rate": "3.65", "source": "shared"} in periods
    put = await client.put("/v1/reference-rates/ecb_main_refinancing",
                           json={"periods": [{"valid_from": "2026-02-11", "rate": "2.00"}]})  # fmt: skip
    assert put.status_code == 200, put.text
    assert put.json()["periods"][-1] == {"valid_from": "2026-02-11", "rate": "2.00", "source": "tenant"}
    bad = await client.put("/v1/reference-rates/own_rate", json={"periods": [{"valid_from": "2026-01-01", "rate": 2}]})
    assert bad.status_code == 422 and "periods.0.rate" in bad.text
    assert (await client.get("/v1/reference-rates/nope")).status_code == 404


async def test_interest_follows_the_reference_rate_half_yearly(pool, h):
    """ECB + 8 points, fixed half-yearly: due 2024-12-20, so Dec 21-31 at 4.25 + 8 and 2025 at 3.15 + 8 (1 Jan)
    and from 1 July 2025 at 2.15 + 8: the assessment's periods name those rates."""
    soft = {"name": "soft", "offset": "PT0S", "charge_interest": True}
    interest = {"reference": "ecb_main_refinancing", "margin": "8.00"}
    await h.use_policy(pool, h.TENANT, {"anchor": "issued_at", "interest": interest, "stages": [soft]})
    invoice = await h.issue(pool, amount_due="1000.00", due_date=date(2024, 12, 20), timezone="UTC")
    assert await h.fire(pool) == 1
    [assessed] = await h.outbox_events(pool, ASSESSED, invoice["subject"])
    rates = [p["annual_rate"] for p in assessed["data"]["periods"]]
    assert [float(r) for r in rates[:3]] == [12.25, 11.15, 10.15]


async def test_an_unknown_reference_charges_no_interest_and_the_stage_still_fires(pool, h):
    soft = {"name": "soft", "offset": "PT0S", "charge_interest": True, "late_fee": {"EUR": "5.00"}}
    interest = {"reference": "no_such_rate", "margin": "8.00"}
    await h.use_policy(pool, h.TENANT, {"anchor": "issued_at", "interest": interest, "stages": [soft]})
    invoice = await overdue_30_days(pool, h)
    assert await h.fire(pool) == 1
    [assessed] = await h.outbox_events(pool, ASSESSED, invoice["subject"])
    assert (assessed["data"]["late_fee"], assessed["data"]["interest"], assessed["data"]["periods"]) == (
        "5.00",
        "0.00",
        [],
    )
    [escalated] = await h.outbox_events(pool, ESCALATED, invoice["subject"])
    assert escalated["data"]["charges"]["total_due"] == "1005.00"
