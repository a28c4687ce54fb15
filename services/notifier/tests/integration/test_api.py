"""GET /v1/deliveries: a tenant's deliveries for support, behind its API key."""

import httpx
import pytest

from dunning import tenancy
from dunning.ids import new_id
from dunning_notifier.api import ApiDeps, create_app
from dunning_tools.testing.metrics import samples

pytestmark = pytest.mark.integration
KEY_A, KEY_B = "dk_testkey_notifier_a_0123456789", "dk_testkey_notifier_b_0123456789"


@pytest.fixture
async def api(notifier_pool, notifier_settings):
    async with notifier_pool.acquire() as conn:
        await tenancy.provision(conn, "ten_test_notifier", "Acme", KEY_A)
        await tenancy.provision(conn, "ten_other", "Other", KEY_B)
    app = create_app(ApiDeps(pool=notifier_pool, settings=notifier_settings(auth_cache_seconds=0)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


def auth(key: str = KEY_A) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def test_lists_an_invoices_deliveries_for_its_tenant_only(
    api, notifier_pool, stage_data, stage_escalated, consume
):
    mine = stage_data(stage="soft")
    await consume(notifier_pool, stage_escalated(mine))
    await consume(notifier_pool, stage_escalated(dict(stage_data(stage="firm"), invoice_id=mine["invoice_id"])))
    other = stage_data(tenant_id="ten_other", invoice_id=mine["invoice_id"])
    await consume(notifier_pool, stage_escalated(other))

    resp = await api.get("/v1/deliveries", params={"invoice_id": mine["invoice_id"]}, headers=auth())
    assert resp.status_code == 200
    body = resp.json()
    assert [d["stage"] for d in body["data"]] == ["firm", "soft"]  # newest first
    first = body["data"][1]
    assert first["state"] == "pending" and first["attempts"] == 0
    assert first["in_doubt_attempts"] == 0 and first["last_in_doubt_at"] is None
    assert first["recipient"] == mine["customer"]["email"]
    assert first["delivery_id"].startswith("dlv_")
    assert body["next_cursor"] is None

    other_view = (
        await api.get("/v1/deliveries", params={"invoice_id": mine["invoice_id"]}, headers=auth(KEY_B))
    ).json()
    assert [d["recipient"] for d in other_view["data"]] == [other["customer"]["email"]]

    one = await api.get(f"/v1/deliveries/{first['delivery_id']}", headers=auth())
    assert one.status_code == 200 and one.json()["stage"] == "soft"
    hidden = await api.get(f"/v1/deliveries/{first['delivery_id']}", headers=auth(KEY_B))
    assert hidden.status_code == 404 and hidden.headers["content-type"] == "application/problem+json"


async def test_pages_with_a_cursor(api, notifier_pool, stage_data, stage_escalated, consume):
    for stage in ("pre_due", "soft", "firm"):
        await consume(notifier_pool, stage_escalated(stage_data(stage=stage)))
    first = (await api.get("/v1/deliveries", params={"limit": 2}, headers=auth())).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    second = (
        await api.get("/v1/deliveries", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth())
    ).json()
    assert [d["stage"] for d in second["data"]] == ["pre_due"] and second["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"invoice_id": "not-an-invoice"}, "invoice_id", id="bad-invoice-id"),
        pytest.param({"state": "lost"}, "state", id="bad-state"),
        pytest.param({"limit": 0}, "limit", id="bad-limit"),
        pytest.param({"cursor": "dlv_0123456789"}, "cursor", id="not-a-cursor"),
    ],
)
async def test_bad_query_is_a_problem_naming_the_field(api, params, field):
    resp = await api.get("/v1/deliveries", params=params, headers=auth())
    assert resp.status_code in (400, 422)
    assert resp.headers["content-type"] == "application/problem+json"
    assert any(e["field"].endswith(field) for e in resp.json()["errors"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer dk_nope"}, {"Authorization": "Basic x"}])
async def test_requires_an_api_key(api, headers):
    resp = await api.get("/v1/deliveries", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"


async def test_health_and_docs(api):
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    assert "/v1/deliveries" in (await api.get("/openapi.json")).json()["paths"]


async def test_metrics_count_deliveries_by_state_and_in_doubt(api, notifier_pool, stage_data, stage_escalated, consume):
    for stage in ("soft", "firm"):
        await consume(notifier_pool, stage_escalated(stage_data(stage=stage)))
    await notifier_pool.execute(  # one was taken back twice after its worker's lease ran out
        "UPDATE deliveries SET in_doubt_attempts = 2, last_in_doubt_at = now() WHERE stage = 'firm'"
    )

    resp = await api.get("/metrics")  # an operator's endpoint, like /healthz: no API key
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    scraped = samples(resp.text)
    assert scraped['dunning_notifier_deliveries{state="pending"}'] == 2
    assert scraped['dunning_notifier_deliveries{state="sent"}'] == 0
    assert scraped["dunning_notifier_deliveries_in_doubt"] == 1
    assert scraped["dunning_notifier_in_doubt_attempts"] == 2
    assert "# TYPE dunning_notifier_in_doubt_attempts gauge" in resp.text
    assert scraped['dunning_notifier_channel_deliveries{channel="email",state="pending"}'] == 2
    assert scraped['dunning_notifier_channel_deliveries{channel="sms",state="pending"}'] == 0
    assert scraped['dunning_notifier_channel_in_doubt_attempts{channel="email"}'] == 2
    assert scraped['dunning_notifier_channel_in_doubt_attempts{channel="webhook"}'] == 0
    from dunning_notifier.channels import PROVIDERS
    from dunning_notifier.metrics import CHANNELS

    assert set(CHANNELS) == set(PROVIDERS)  # a series per channel a policy may name


async def test_a_delivery_shows_the_addresses_it_was_sent_to(api, notifier, stage_data):
    data = stage_data()
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    await notifier.receive(data)
    pending = (await api.get("/v1/deliveries", params={"invoice_id": data["invoice_id"]}, headers=auth())).json()
    assert (pending["data"][0]["recipient"], pending["data"][0]["cc"]) == (data["customer"]["email"], [])

    ap = f"ap+{new_id('m')[-8:]}@example.com"
    await notifier.customer_updated(customer_id=customer_id, version=2, email=ap, cc=["cfo@example.com"])
    async with notifier.dispatching():
        row = await notifier.wait_state(data["invoice_id"], "sent")

    sent = (await api.get(f"/v1/deliveries/{row['delivery_id']}", headers=auth())).json()
    assert (sent["recipient"], sent["cc"]) == (ap, ["cfo@example.com"])
    assert "cc" in (await api.get("/openapi.json")).json()["components"]["schemas"]["DeliveryOut"]["properties"]


async def test_a_delivery_a_stop_dropped_shows_cancelled_with_its_reason(api, notifier, stage_data):
    kept, dropped = stage_data(stage="soft"), stage_data(stage="firm")
    await notifier.receive(kept)
    await notifier.receive(dropped)
    await notifier.stop("stopped", dropped["invoice_id"], reason="invoice_written_off")

    resp = await api.get("/v1/deliveries", params={"state": "cancelled"}, headers=auth())
    assert resp.status_code == 200
    [one] = resp.json()["data"]
    assert one["invoice_id"] == dropped["invoice_id"] and one["state"] == "cancelled"
    assert one["cancel_reason"] == "invoice_written_off" and one["cancelled_at"] is not None
    assert one["next_attempt_at"] is None and one["attempts"] == 0
    pending = (await api.get("/v1/deliveries", params={"invoice_id": kept["invoice_id"]}, headers=auth())).json()
    assert pending["data"][0]["cancel_reason"] is None and pending["data"][0]["cancelled_at"] is None
    scraped = samples((await api.get("/metrics")).text)
    assert scraped['dunning_notifier_deliveries{state="cancelled"}'] == 1
    assert scraped['dunning_notifier_deliveries{state="pending"}'] == 1


async def test_a_notice_shows_the_invoices_it_listed_and_the_one_a_stop_left_out(
    api, notifier, notice_item, notice_data
):
    kept, paid, overdue = notice_item(stage="firm"), notice_item(stage="soft"), notice_item(stage=None)
    data = notice_data([kept, paid, overdue])
    await notifier.compose(data)
    await notifier.stop("stopped", paid["invoice_id"], reason="invoice_settled")
    async with notifier.dispatching():
        await notifier.wait_notice(data["notice_id"], "sent")

    resp = await api.get(f"/v1/notices/{data['notice_id']}", headers=auth())
    assert resp.status_code == 200
    body = resp.json()
    assert body["state"] == "sent" and body["recipient"] == data["customer"]["email"]
    assert body["invoice_ids"] == [kept["invoice_id"], overdue["invoice_id"]]
    assert body["left_out"] == [paid["invoice_id"]]
    assert [(i["invoice_id"], i["left_out"], i["stop_reason"], i["outcome"]) for i in body["items"]] == [
        (kept["invoice_id"], False, None, "sent"),
        (paid["invoice_id"], True, "invoice_settled", "cancelled"),
        (overdue["invoice_id"], False, None, None),
    ]
    assert (
        await api.get(f"/v1/notices/{data['notice_id']}", headers=auth("dk_testkey_notifier_b_0123456789"))
    ).status_code == 404
    missing = await api.get("/v1/notices/ntc_01KJ4N6Q8S0U2W4Y6A8C0E2G4J", headers=auth())
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/v1/notices/not-a-notice", headers=auth())).status_code == 422
    spec = (await api.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/notices/{notice_id}"]["get"]
    assert operation["summary"] and operation["description"]
    assert spec["components"]["schemas"]["NoticeOut"]["examples"]
    scraped = samples((await api.get("/metrics")).text)
    assert scraped['dunning_notifier_notices{state="sent"}'] == 1
