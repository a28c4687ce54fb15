"""The HTTP API on a real PostgreSQL: policy PUT/GET with auth and validation problems, timers."""

from datetime import date

import httpx
import pytest

from dunning_scheduler.api import create_app

pytestmark = pytest.mark.integration
DEMO = {
    "id": "pol_demo",
    "anchor": "issued_at",
    "stages": [{"name": "soft", "offset": "PT5S"}, {"name": "firm", "offset": "PT10S", "channels": ["email", "sms"]}],
}


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


async def test_a_tenant_without_a_policy_gets_the_default(client):
    response = await client.get("/v1/policy")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "default" and body["policy_id"] == "pol_default" and body["version"] == 1
    assert [s["name"] for s in body["policy"]["stages"]] == ["pre_due", "soft", "firm", "final", "collections"]


async def test_put_stores_a_new_version_and_get_returns_it(client):
    first = await client.put("/v1/policy", json=DEMO)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["created"] is True
    assert first.json()["policy"]["stages"][0] == {
        "name": "soft",
        "offset": "PT5S",
        "template": "soft",
        "channels": ["email"],
    }
    same = await client.put("/v1/policy", json=DEMO)  # idempotent: an equal document is no new version
    assert same.json()["version"] == 1 and same.json()["created"] is False
    changed = await client.put("/v1/policy", json={**DEMO, "stages": DEMO["stages"][:1]})
    assert changed.json()["version"] == 2
    active = (await client.get("/v1/policy")).json()
    assert active["version"] == 2 and active["source"] == "tenant" and active["policy_id"] == "pol_demo"
    assert len(active["policy"]["stages"]) == 1


@pytest.mark.parametrize(
    "document, field",
    [
        pytest.param({**DEMO, "timezone": "UTC"}, "timezone", id="unknown-key"),
        pytest.param({"stages": [{"name": "soft", "offset": "P1X"}]}, "stages.0.offset", id="bad-duration"),
        pytest.param(
            {"stages": [{"name": "a", "offset": "P2D"}, {"name": "b", "offset": "P1D"}]},
            "stages.1.offset",
            id="not-increasing",
        ),
        pytest.param(
            {"stages": [{"name": "a", "offset": "P1D"}, {"name": "a", "offset": "P2D"}]},
            "stages.1.name",
            id="duplicate-name",
        ),
        pytest.param({"stages": [{"name": f"s{i}", "offset": f"P{i}D"} for i in range(21)]}, "stages", id="too-many"),
        pytest.param([1, 2], "(body)", id="not-an-object"),
    ],
)
async def test_invalid_policies_are_problems_naming_the_field(client, document, field):
    response = await client.put("/v1/policy", json=document)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]
    assert (await client.get("/v1/policy")).json()["source"] == "default"


async def test_a_body_that_is_not_json_is_a_400(client):
    response = await client.put("/v1/policy", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer dk_wrong"}, id="unknown-key"),
        pytest.param({"Authorization": "Basic abc"}, id="wrong-scheme"),
    ],
)
async def test_routes_need_an_api_key(pool, settings, headers):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for method, path in [
            ("GET", "/v1/policy"),
            ("PUT", "/v1/policy"),
            ("GET", "/v1/invoices/inv_0123456789AB/timers"),
        ]:
            response = await client.request(method, path, headers=headers, json=DEMO)
            assert response.status_code == 401, (method, path)
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_invoice_timers_show_the_plan_to_its_tenant_only(client, pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    invoice_id = event["subject"]
    await h.apply(pool, event)
    response = await client.get(f"/v1/invoices/{invoice_id}/timers")
    assert response.status_code == 200
    body = response.json()
    assert body["planned"] and body["balance"] == "1250.00" and not body["settled"]
    assert [t["stage"] for t in body["timers"]] == ["pre_due", "soft", "firm", "final", "collections"]
    assert {t["state"] for t in body["timers"]} == {"scheduled"}

    missing = await client.get("/v1/invoices/inv_0123456789ABCDEF/timers")
    assert missing.status_code == 404
    bad = await client.get("/v1/invoices/not-an-id/timers")
    assert bad.status_code == 422
    other = h.invoice_issued(tenant_id="ten_other", due_date=date(2031, 3, 20))
    await h.apply(pool, other)
    assert (await client.get(f"/v1/invoices/{other['subject']}/timers")).status_code == 404


async def test_invoice_timers_show_paused_stages_and_an_instalments_context(client, pool, h):
    event = h.invoice_issued(due_date=date(2031, 3, 20))
    await h.apply(pool, event)
    await h.apply(pool, h.plan_agreed([event], [(date(2031, 4, 20), "1250.00")]))
    body = (await client.get(f"/v1/invoices/{event['subject']}/timers")).json()
    by_stage = {t["stage"]: t for t in body["timers"]}
    assert {by_stage[s]["state"] for s in ("pre_due", "soft", "firm", "final", "collections")} == {"paused"}
    reminder = by_stage["instalment_1_pre_due"]
    assert (reminder["kind"], reminder["state"], reminder["template"]) == (
        "instalment",
        "scheduled",
        "instalment_pre_due",
    )
    assert reminder["context"]["due_date"] == "2031-04-20" and reminder["context"]["instalments"] == "1"
