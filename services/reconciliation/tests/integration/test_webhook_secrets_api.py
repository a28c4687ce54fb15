"""The webhook secrets' rotation API against real PostgreSQL: per processor, masked listings, the
overlap during which old and new secrets are both valid, revocation, and field-naming refusals."""

import base64

import pytest

from dunning_reconciliation import webhook_secrets

pytestmark = pytest.mark.integration

GC_SECRET = "gc-endpoint-secret-0123456789abcdef"


async def _create(client, h, **body):
    return await client.post("/v1/webhook-secrets", json=body, headers=h.AUTH)


async def test_a_generated_standard_webhooks_secret_is_answered_once_in_full_then_masked(pool, client, h):
    response = await _create(client, h, processor="standard_webhooks")

    assert response.status_code == 201
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["secret_id"].startswith("whs_") and created["status"] == "active"
    assert response.headers["cache-control"] == "no-store"
    listed = (await client.get("/v1/webhook-secrets?processor=standard_webhooks", headers=h.AUTH)).json()["data"]
    assert [s["secret_id"] for s in listed] == [created["secret_id"]]
    assert listed[0]["secret"] == f"whsec_…{secret[-4:]}"
    assert await webhook_secrets.active(pool, h.TENANT, "standard_webhooks") == [secret]


async def test_secrets_are_per_processor(pool, client, h):
    assert (await _create(client, h, processor="gocardless", secret=GC_SECRET)).status_code == 201

    assert await webhook_secrets.active(pool, h.TENANT, "gocardless") == [GC_SECRET]
    assert await webhook_secrets.active(pool, h.TENANT, "stripe") == [h.SECRET]
    assert await webhook_secrets.active(pool, h.TENANT, "standard_webhooks") == []
    listed = (await client.get("/v1/webhook-secrets?processor=stripe", headers=h.AUTH)).json()["data"]
    assert [s["processor"] for s in listed] == ["stripe"]


async def test_rotation_keeps_the_old_secret_valid_during_the_overlap_only(pool, client, h):
    first = (await _create(client, h, processor="gocardless", secret=GC_SECRET)).json()
    second = (await _create(client, h, processor="gocardless", secret=GC_SECRET + "-v2", overlap_seconds=3600)).json()

    assert [p["secret_id"] for p in second["previous"]] == [first["secret_id"]]
    assert set(await webhook_secrets.active(pool, h.TENANT, "gocardless")) == {GC_SECRET, GC_SECRET + "-v2"}
    statuses = {
        s["secret_id"]: s["status"]
        for s in (await client.get("/v1/webhook-secrets?processor=gocardless", headers=h.AUTH)).json()["data"]
    }
    assert statuses == {first["secret_id"]: "expiring", second["secret_id"]: "active"}

    # The overlap is over (moved into the past rather than waited for).
    await pool.execute(
        "UPDATE webhook_secrets SET expires_at = now() - interval '1 second' WHERE secret_id = $1", first["secret_id"]
    )
    assert await webhook_secrets.active(pool, h.TENANT, "gocardless") == [GC_SECRET + "-v2"]
    listed = (await client.get("/v1/webhook-secrets?processor=gocardless", headers=h.AUTH)).json()["data"]
    assert {s["secret_id"]: s["status"] for s in listed}[first["secret_id"]] == "expired"


async def test_a_rotation_with_no_overlap_ends_the_old_secret_at_once(pool, client, h):
    await _create(client, h, processor="gocardless", secret=GC_SECRET)
    await _create(client, h, processor="gocardless", secret=GC_SECRET + "-v2", overlap_seconds=0)

    assert await webhook_secrets.active(pool, h.TENANT, "gocardless") == [GC_SECRET + "-v2"]


async def test_revoking_a_secret_refuses_it_at_once(pool, client, h):
    created = (await _create(client, h, processor="gocardless", secret=GC_SECRET)).json()

    response = await client.delete(f"/v1/webhook-secrets/{created['secret_id']}", headers=h.AUTH)

    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert await webhook_secrets.active(pool, h.TENANT, "gocardless") == []
    again = await client.delete(f"/v1/webhook-secrets/{created['secret_id']}", headers=h.AUTH)
    assert again.json()["revoked_at"] == response.json()["revoked_at"]


async def test_another_tenants_secret_cannot_be_revoked(pool, client, h):
    other = await pool.fetchval("INSERT INTO tenants (id, name) VALUES ('ten_other', 'Other') RETURNING id")
    row = await webhook_secrets.repo.insert_secret(pool, "whs_OTHER0000000000000000000", other, "gocardless", GC_SECRET)
    assert row is not None

    response = await client.delete("/v1/webhook-secrets/whs_OTHER0000000000000000000", headers=h.AUTH)

    assert response.status_code == 404
    assert await webhook_secrets.active(pool, other, "gocardless") == [GC_SECRET]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"processor": "gocardless"}, "secret", id="gocardless-secret-must-be-given"),
        pytest.param({"processor": "stripe"}, "secret", id="stripe-secret-must-be-given"),
        pytest.param({"processor": "stripe", "secret": "not-a-whsec"}, "secret", id="stripe-format"),
        pytest.param({"processor": "gocardless", "secret": "short"}, "secret", id="gocardless-too-short"),
        pytest.param(
            {"processor": "standard_webhooks", "secret": "whsec_" + base64.b64encode(b"x" * 10).decode()},
            "secret",
            id="standard-webhooks-too-few-bytes",
        ),
        pytest.param({"processor": "standard_webhooks", "secret": "whsec_***"}, "secret", id="standard-not-base64"),
        pytest.param({"processor": "paypal", "secret": GC_SECRET}, "processor", id="unknown-processor"),
        pytest.param(
            {"processor": "gocardless", "secret": GC_SECRET, "overlap_seconds": -1}, "overlap_seconds", id="overlap"
        ),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(pool, client, h, body, field):
    before = await pool.fetchval("SELECT count(*) FROM webhook_secrets")

    response = await client.post("/v1/webhook-secrets", json=body, headers=h.AUTH)

    assert response.status_code == 422
    assert field in [e["field"].split(".")[-1] for e in response.json()["errors"]]
    assert await pool.fetchval("SELECT count(*) FROM webhook_secrets") == before


async def test_the_same_secret_twice_is_a_conflict(pool, client, h):
    await _create(client, h, processor="gocardless", secret=GC_SECRET)

    response = await _create(client, h, processor="gocardless", secret=GC_SECRET)

    assert response.status_code == 409 and response.json()["errors"][0]["field"] == "secret"


async def test_the_api_needs_a_key(client):
    assert (await client.get("/v1/webhook-secrets")).status_code == 401
