"""The tenant's settings and the customers' own send windows through the HTTP API on a real
PostgreSQL: defaults without settings, versions with who stored them, invalid documents refused
naming the field."""

import httpx
import pytest

from dunning_scheduler.api import create_app
from dunning_scheduler.settings_store import TTL_SECONDS, TenantConfig

pytestmark = pytest.mark.integration
SETTINGS = {
    "calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer", "country": "DE"},
    "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00", "spread": "PT1H"},
    "contact_caps": {"max_reminders": 3, "period": "P7D", "quiet_period": "P2D"},
    "consolidation": {"enabled": True},
}
CUSTOMER = "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V"


@pytest.fixture
async def client(pool, settings, h):
    app = create_app(pool, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": f"Bearer {h.API_KEY}"}
    ) as client:
        yield client


async def test_without_settings_everything_is_off(client):
    body = (await client.get("/v1/settings")).json()
    assert body["version"] == 0 and body["changed_by"] is None
    assert body["settings"]["send_window"] is None and body["settings"]["contact_caps"] is None
    assert body["settings"]["consolidation"] == {"enabled": False}
    assert body["settings"]["calendar"]["holidays"] == "none"
    assert len(body["settings"]["calendar"]["working_days"]) == 7


async def test_settings_are_versioned_with_who_stored_them(client):
    first = await client.put("/v1/settings", json=SETTINGS, headers={"Dunning-Actor": "anna@acme.example"})
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["created"], first.json()["changed_by"]) == (
        1,
        True,
        "anna@acme.example",
    )
    assert first.json()["settings"]["send_window"]["start"] == "08:00"
    same = await client.put("/v1/settings", json=SETTINGS)
    assert (same.json()["version"], same.json()["created"]) == (1, False)
    second = await client.put("/v1/settings", json={"consolidation": {"enabled": True}})
    assert (second.json()["version"], second.json()["changed_by"]) == (2, "api")
    got = (await client.get("/v1/settings")).json()
    assert got["version"] == 2 and got["settings"]["send_window"] is None


@pytest.mark.parametrize(
    "document, field",
    [
        pytest.param({"send_window": {"start": "17:00", "end": "08:00"}}, "send_window.end", id="end-before-start"),
        pytest.param({"send_window": {"start": "8am", "end": "17:00"}}, "send_window.start", id="bad-clock"),
        pytest.param({"calendar": {"working_days": ["mon", "funday"]}}, "calendar.working_days.1", id="bad-day"),
        pytest.param({"calendar": {"closures": ["2026-13-01"]}}, "calendar.closures", id="bad-closure"),
        pytest.param({"calendar": {"holidays": "tenant"}}, "calendar.country", id="tenant-holidays-no-country"),
        pytest.param({"contact_caps": {"max_reminders": 0, "period": "P7D"}}, "contact_caps.max_reminders", id="cap"),
        pytest.param({"consolidation": {"enabled": "yes"}}, "consolidation.enabled", id="not-bool"),
        pytest.param({"timezone": "UTC"}, "timezone", id="unknown-key"),
    ],
)
async def test_invalid_settings_are_problems_naming_the_field(client, document, field):
    response = await client.put("/v1/settings", json=document)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]], response.json()["errors"]
    assert (await client.get("/v1/settings")).json()["version"] == 0


async def test_a_customers_own_window_is_set_shown_and_removed(client):
    path = f"/v1/settings/customers/{CUSTOMER}"
    assert (await client.get(path)).json()["send_window"] is None
    window = {"days": ["mon", "wed"], "start": "10:00", "end": "12:00"}
    put = await client.put(path, json={"send_window": window}, headers={"Dunning-Actor": "ops"})
    assert put.status_code == 200, put.text
    assert put.json()["send_window"]["days"] == ["mon", "wed"] and put.json()["changed_by"] == "ops"
    assert (await client.get(path)).json()["send_window"]["start"] == "10:00"
    bad = await client.put(path, json={"send_window": {"start": "12:00", "end": "10:00"}})
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["send_window.end"]
    removed = await client.put(path, json={"send_window": None})  # null removes it
    assert removed.status_code == 200 and removed.json()["send_window"] is None
    assert (await client.delete(path)).status_code == 404  # nothing left to delete
    await client.put(path, json={"send_window": window})
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).json()["send_window"] is None


async def test_a_change_reaches_a_process_within_the_cache_ttl(client, pool, h):
    """Every replica keeps the settings for at most TTL_SECONDS: a change made elsewhere is seen after it."""
    clock = [0.0]
    config = TenantConfig(clock=lambda: clock[0])
    async with pool.acquire() as conn:
        assert (await config.settings_of(conn, h.TENANT)).version == 0
        assert (await client.put("/v1/settings", json=SETTINGS)).status_code == 200  # another process's change
        clock[0] += TTL_SECONDS / 2
        assert (await config.settings_of(conn, h.TENANT)).version == 0  # still the one read
        clock[0] += TTL_SECONDS
        fresh = await config.settings_of(conn, h.TENANT)
        assert fresh.version == 1 and fresh.consolidation and fresh.send_window is not None
        window = {"send_window": {"days": ["mon"], "start": "10:00", "end": "11:00"}}
        assert not await config.windows_of(conn, h.TENANT, [CUSTOMER])  # none yet (and remembered)
        await client.put(f"/v1/settings/customers/{CUSTOMER}", json=window)
        clock[0] += TTL_SECONDS * 2
        found = await config.windows_of(conn, h.TENANT, [CUSTOMER, "cus_other"])
        assert list(found) == [CUSTOMER] and found[CUSTOMER].days == frozenset({0})
