"""A policy applied to open invoices (PUT /v1/policy?apply_to=open_invoices): the job, worked batch by
batch by the replan loop, its progress on the API, and what the invoices' timers become."""

from datetime import timedelta

import httpx
import pytest

from dunning.clock import utcnow
from dunning_scheduler.api import create_app
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.replan_loop import ReplanLoop

pytestmark = pytest.mark.integration
RESCHEDULED = "dunning.StagesRescheduled.v1"
V1 = {"id": "pol_terms", "stages": [{"name": "soft", "offset": "P1D"}, {"name": "firm", "offset": "P7D"}]}
V2 = {"id": "pol_terms", "stages": [{"name": "soft", "offset": "P2D"}, {"name": "final", "offset": "P14D"}]}


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


async def test_a_policy_applied_to_open_invoices_replans_them_batch_by_batch_and_reports_progress(pool, client, h):
    assert (await client.put("/v1/policy", json=V1)).json()["replan"] is None  # new invoices only
    due = utcnow().date() + timedelta(days=20)
    open_ = [h.invoice_issued(due_date=due) for _ in range(5)]
    paid, voided = h.invoice_issued(due_date=due), h.invoice_issued(due_date=due)
    for envelope in [*open_, paid, voided]:
        await h.apply(pool, envelope)
    await h.apply(pool, h.payment_received(paid["subject"], balance="0.00", settled=True))
    await h.apply(pool, h.invoice_voided(voided, version=2))
    sent = open_[0]["subject"]  # its soft reminder has gone out
    await pool.execute("UPDATE timers SET scheduled_at = now() WHERE invoice_id = $1 AND stage = 'soft'", sent)
    schema = await pool.fetchval("SELECT current_schema()")
    assert await FiringLoop(pool, schema, gated=False).fire_once() == 1
    before = {e["subject"]: {r["stage"]: r for r in await h.timers(pool, e["subject"])} for e in open_}
    untouched = {e["subject"]: await h.timers(pool, e["subject"]) for e in (paid, voided)}

    put = await client.put("/v1/policy", params={"apply_to": "open_invoices"}, json=V2)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["version"] == 2 and body["created"] is True
    job = body["replan"]
    assert job["status"] == "running" and job["policy_version"] == 2 and job["invoices_total"] == 5
    assert job["invoices_done"] == 0

    loop = ReplanLoop(pool, schema, ActivePolicies(), batch_size=2)
    assert await loop.work_once()
    progress = (await client.get(f"/v1/policy/replans/{job['replan_id']}")).json()
    assert (progress["status"], progress["invoices_done"], progress["batches"]) == ("running", 2, 1)
    while await loop.work_once():
        pass
    progress = (await client.get(f"/v1/policy/replans/{job['replan_id']}")).json()
    assert (progress["status"], progress["invoices_done"], progress["invoices_rescheduled"]) == ("done", 5, 5)
    assert progress["batches"] == 3 and progress["finished_at"] is not None

    for envelope in open_:
        invoice_id = envelope["subject"]
        rows = {r["stage"]: r for r in await h.timers(pool, invoice_id)}
        old = before[invoice_id]
        if invoice_id == sent:
            assert rows["soft"] == old["soft"]  # sent stays sent
        else:
            assert rows["soft"]["stage_id"] == old["soft"]["stage_id"]
            assert rows["soft"]["scheduled_at"] - old["soft"]["scheduled_at"] == timedelta(days=1)
            assert rows["soft"]["policy_version"] == 2
        assert (rows["firm"]["state"], rows["firm"]["reason"]) == ("cancelled", "policy_applied")  # dropped
        assert rows["final"]["state"] == "scheduled" and rows["final"]["policy_version"] == 2  # added
        [event] = await h.outbox_events(pool, RESCHEDULED, invoice_id)  # checked against its contract
        data = event["data"]
        assert (data["reason"], data["cause_event_id"], data["policy_version"]) == ("policy_applied", None, 2)
        listed = {
            s["stage"]: (s["previous_scheduled_at"] is None, s["scheduled_at"] is None, s["state"])
            for s in data["stages"]
        }
        assert listed["firm"] == (False, True, "cancelled") and listed["final"] == (True, False, "scheduled")
        assert ("soft" in listed) is (invoice_id != sent)
        planned_with = await pool.fetchrow(
            "SELECT policy_version, policy_is_default FROM invoices WHERE invoice_id = $1", invoice_id
        )
        assert tuple(planned_with) == (2, False)
    for invoice_id, rows in untouched.items():
        assert await h.timers(pool, invoice_id) == rows
        assert await h.outbox_events(pool, RESCHEDULED, invoice_id) == []

    # From now on a due-date change re-plans with the version the invoice was re-planned with (v2).
    moved = h.invoice_updated(open_[1], version=2, due_date=due + timedelta(days=7))
    await h.apply(pool, moved)
    rows = {r["stage"]: r for r in await h.timers(pool, open_[1]["subject"])}
    assert rows["final"]["scheduled_at"].date() == due + timedelta(days=21)


async def test_a_newer_apply_to_supersedes_a_running_one_and_an_equal_document_still_applies(pool, client, h):
    await client.put("/v1/policy", json=V1)
    await h.apply(pool, h.invoice_issued(due_date=utcnow().date() + timedelta(days=20)))
    first = (await client.put("/v1/policy", params={"apply_to": "open_invoices"}, json=V2)).json()["replan"]
    again = (await client.put("/v1/policy", params={"apply_to": "open_invoices"}, json=V2)).json()
    assert again["created"] is False and again["replan"]["policy_version"] == 2
    superseded = (await client.get(f"/v1/policy/replans/{first['replan_id']}")).json()
    assert superseded["status"] == "superseded"
    schema = await pool.fetchval("SELECT current_schema()")
    loop = ReplanLoop(pool, schema, ActivePolicies(), batch_size=10)
    assert await loop.work_once() and not await loop.work_once()
    done = (await client.get(f"/v1/policy/replans/{again['replan']['replan_id']}")).json()
    assert (done["status"], done["invoices_done"], done["invoices_rescheduled"]) == ("done", 1, 1)


@pytest.mark.parametrize(
    "request_, status, field",
    [
        pytest.param(("put", "/v1/policy?apply_to=everything"), 422, "apply_to", id="unknown-apply-to"),
        pytest.param(("get", "/v1/policy/replans/rpl_01JD000000000000000000000"), 404, "replan_id", id="no-such-job"),
        pytest.param(("get", "/v1/policy/replans/nope"), 422, "replan_id", id="bad-id"),
    ],
)
async def test_bad_replan_requests_name_the_field(client, request_, status, field):
    method, url = request_
    response = await client.request(method, url, json=V2 if method == "put" else None)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_the_replan_routes_are_documented(client):
    spec = (await client.get("/openapi.json")).json()
    put = spec["paths"]["/v1/policy"]["put"]
    assert {p["name"] for p in put["parameters"]} >= {"apply_to"}
    get = spec["paths"]["/v1/policy/replans/{replan_id}"]["get"]
    assert get["operationId"] == "getPolicyReplan" and "404" in get["responses"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReplanOut")
