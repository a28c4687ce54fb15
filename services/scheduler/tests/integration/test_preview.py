"""POST /v1/policy/preview on a real PostgreSQL: a preview matches what is later planned, consolidation
and caps as firing would apply them, charges projected, nothing stored, bad input named."""

from datetime import date, datetime, timedelta
from functools import partial

import httpx
import pytest

from dunning.ids import new_id
from dunning_scheduler.api import create_app
from dunning_scheduler.bootstrap import handlers_for
from dunning_scheduler.policy_store import ActivePolicies
from dunning_tools.testing.handlers import apply_event

pytestmark = pytest.mark.integration
POLICY = {
    "id": "pol_b2b",
    "days": "business",
    "stages": [
        {"name": "pre_due", "offset": "-P3D"},
        {"name": "soft", "offset": "P1D"},
        {"name": "firm", "offset": "P5D", "channels": ["email", "sms"], "late_fee": {"EUR": "40.00"}},
    ],
}
SETTINGS = {
    "calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer"},
    "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "10:00", "end": "16:00", "spread": "PT1H"},
}


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_preview_matches_what_is_later_planned(client, pool, h):
    customer_id = new_id("cus")
    event = h.invoice_issued(due_date=date(2031, 12, 24), amount_due="1200.00")
    event["data"]["customer"].update(customer_id=customer_id, country="DE", subdivision="BY")
    data = event["data"]
    body = {
        "policy": POLICY,
        "settings": SETTINGS,
        "invoices": [
            {
                "reference": "sample-1",
                "number": data["number"],
                "currency": data["currency"],
                "amount_due": data["amount_due"],
                "due_date": data["due_date"],
                "customer": {"customer_id": customer_id, "timezone": "Europe/Berlin", "locale": "de-DE",
                             "country": "DE", "subdivision": "BY"},
            }
        ],
        "now": event["time"],
    }  # fmt: skip
    response = await client.post("/v1/policy/preview", json=body)
    assert response.status_code == 200, response.text
    [previewed] = response.json()["invoices"]
    assert previewed["reference"] == "sample-1" and previewed["policy_id"] == "pol_b2b"
    stages = previewed["stages"]
    assert [(s["stage"], s["channel"]) for s in stages] == [
        ("pre_due", "email"), ("soft", "email"), ("firm", "email"), ("firm", "sms")
    ]  # fmt: skip
    soft = stages[1]
    # 25 and 26 December are holidays in Bavaria, then a weekend; 09:00 is before the window: 10:00 + spread.
    assert soft["local_time"].startswith("2031-12-29T1") and soft["moved"], soft
    assert soft["timezone"] == "Europe/Berlin" and soft["late_fee"] == "0.00"
    assert stages[2]["late_fee"] == "40.00" and stages[2]["total_due"] == "1240.00"
    assert (await client.get("/v1/settings")).json()["version"] == 0  # the preview stored nothing
    assert (await client.get("/v1/policy")).json()["source"] == "default"

    assert (await client.put("/v1/policy", json=POLICY)).status_code == 200
    assert (await client.put("/v1/settings", json=SETTINGS)).status_code == 200
    await partial(apply_event, handlers=handlers_for(ActivePolicies()))(pool, event)

    timers = await h.timers(pool, event["subject"])
    assert [(t["stage"], t["channel"], t["state"], t["scheduled_at"]) for t in timers] == [
        (s["stage"], s["channel"], s["state"], at(s["scheduled_at"])) for s in stages
    ]


async def test_consolidation_puts_a_customers_stages_due_together_in_one_notice(client):
    customer = {"customer_id": new_id("cus"), "timezone": "UTC", "locale": "en-GB"}
    policy = {"stages": [{"name": "soft", "offset": "P1D"}]}
    invoices = [
        {"reference": f"s{n}", "currency": "EUR", "amount_due": "100.00", "due_date": "2031-03-10",
         "customer": customer}
        for n in range(3)
    ]  # fmt: skip
    answer = await client.post(
        "/v1/policy/preview",
        json={"policy": policy, "settings": {"consolidation": {"enabled": True}}, "invoices": invoices,
              "now": "2031-03-01T00:00:00Z"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    [notice] = answer.json()["notices"]
    assert notice["invoices"] == ["s0", "s1", "s2"] and notice["channel"] == "email"
    assert {i["stages"][0]["notice"] for i in answer.json()["invoices"]} == {notice["notice"]}


async def test_a_contact_cap_defers_the_customers_later_stages(client):
    customer = {"customer_id": new_id("cus"), "timezone": "UTC", "locale": "en-GB"}
    policy = {"stages": [{"name": "soft", "offset": "P1D"}]}
    invoices = [
        {"reference": f"s{n}", "currency": "EUR", "amount_due": "100.00", "due_date": f"2031-03-1{n}",
         "customer": customer}
        for n in range(3)
    ]  # fmt: skip
    settings = {"contact_caps": {"max_reminders": 1, "period": "P7D"}}
    answer = await client.post(
        "/v1/policy/preview",
        json={"policy": policy, "settings": settings, "invoices": invoices, "now": "2031-03-01T00:00:00Z"},
    )
    assert answer.status_code == 200, answer.text
    first, second, third = (i["stages"][0] for i in answer.json()["invoices"])
    assert first["deferred"] == [] and second["deferred"][0]["reason"] == "contact_cap"
    assert at(second["scheduled_at"]) >= at(first["scheduled_at"]) + timedelta(days=7)
    assert third["deferred"] and at(third["scheduled_at"]) >= at(second["scheduled_at"]) + timedelta(days=7)


@pytest.mark.parametrize(
    "body, field",
    [
        pytest.param({"invoice_ids": ["inv_01JB2F7H9K3M5N7P9Q1R3S5T7V"]}, "invoice_ids.0", id="unknown-invoice"),
        pytest.param({"policy_id": "pol_nope", "invoice_ids": ["x"]}, "policy_id", id="unknown-policy"),
        pytest.param({"policy": {"stages": [{"name": "a", "offset": "P1X"}]}, "invoice_ids": ["x"]},
                     "policy.stages.0.offset", id="bad-policy"),
        pytest.param({"settings": {"send_window": {"start": "9", "end": "17:00"}}, "invoice_ids": ["x"]},
                     "settings.send_window.start", id="bad-settings"),
        pytest.param({}, "invoices", id="nothing-to-preview"),
        pytest.param({"invoices": [{"reference": "a", "currency": "EUR", "amount_due": "1", "due_date": "2031-02-30"}]},
                     "invoices.0.due_date", id="bad-date"),
    ],
)  # fmt: skip
async def test_bad_previews_are_problems_naming_the_field(client, body, field):
    response = await client.post("/v1/policy/preview", json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.json()


async def test_open_invoices_and_the_rules_choice_are_previewed_as_planning_would(client, pool, h):
    await client.put("/v1/policies/pol_firm", json={"stages": [{"name": "firm", "offset": "P2D"}]})
    rules = {"rules": [{"name": "big", "policy_id": "pol_firm", "when": {"amount_min": "1000.00"}}]}
    assert (await client.put("/v1/policy-rules", json=rules)).status_code == 200
    big = h.invoice_issued(due_date=date(2031, 6, 10), amount_due="5000.00")
    await partial(apply_event, handlers=handlers_for(ActivePolicies()))(pool, big)
    timers = (await client.get(f"/v1/invoices/{big['subject']}/timers")).json()
    assert timers["policy_id"] == "pol_firm" and timers["segment"]["rule"] == "big"

    small = {"reference": "small", "currency": "EUR", "amount_due": "10.00", "due_date": "2031-06-10",
             "customer": {"timezone": "Europe/Berlin"}}  # fmt: skip
    answer = await client.post(
        "/v1/policy/preview", json={"invoice_ids": [big["subject"]], "invoices": [small], "now": big["time"]}
    )
    assert answer.status_code == 200, answer.text
    by_name = {i.get("invoice_id") or i["reference"]: i for i in answer.json()["invoices"]}
    chosen = by_name[big["subject"]]
    assert (chosen["policy_id"], chosen["segment"]["rule"]) == ("pol_firm", "big")
    assert [at(s["scheduled_at"]) for s in chosen["stages"]] == [
        t["scheduled_at"] for t in await h.timers(pool, big["subject"])
    ]
    assert by_name["small"]["policy_id"] == "pol_default" and by_name["small"]["segment"]["rule"] == "default"
