"""The operator CLI against the real test PostgreSQL: each command as an operator types it."""

import asyncio
import json
import uuid

import asyncpg
import pytest

from dunning import tenancy
from dunning_cli.main import main

pytestmark = pytest.mark.integration

SERVICES = ("ingest", "scheduler", "notifier", "reconciliation")


@pytest.fixture
def schemas(infra, monkeypatch) -> dict[str, str]:
    """A fresh schema per service, named by the services' settings as in a deployment."""
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"t_cli_{suffix}_{service}" for service in SERVICES}
    monkeypatch.setenv("DATABASE_URL", infra.database_url)
    for service, name in names.items():
        monkeypatch.setenv(f"{service.upper()}_DB_SCHEMA", name)
    return names


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def in_schema(infra, schema: str, query: str, *args):
    """One value from a service's schema (the CLI runs its own event loop, so the test has none)."""

    async def fetch():
        conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": schema})
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_a_tenant_created_by_the_cli_can_call_every_service(infra, schemas, capsys):
    status, out, _ = run(capsys, "tenant", "create", "--name", "Acme Ltd", "--json")
    assert status == 0
    created = json.loads(out)
    assert created["name"] == "Acme Ltd" and created["webhook_secret"].startswith("whsec_")
    key_hash = tenancy.hash_api_key(created["api_key"])
    for schema in schemas.values():  # each service authenticates on its own
        assert (
            in_schema(infra, schema, "SELECT tenant_id FROM api_keys WHERE key_hash = $1", key_hash)
            == created["tenant_id"]
        )
    secret = in_schema(
        infra,
        schemas["reconciliation"],
        "SELECT secret FROM webhook_secrets WHERE tenant_id = $1",
        created["tenant_id"],
    )
    assert secret == created["webhook_secret"]

    status, out, _ = run(capsys, "api-key", "create", "--tenant", created["tenant_id"], "--json")
    assert status == 0
    second = json.loads(out)["api_key"]
    assert second != created["api_key"]
    assert (
        in_schema(
            infra, schemas["notifier"], "SELECT count(*) FROM api_keys WHERE tenant_id = $1", created["tenant_id"]
        )
        == 2
    )

    with pytest.raises(SystemExit, match="no tenant ten_nobody"):
        main(["api-key", "create", "--tenant", "ten_nobody"])


def test_the_text_output_shows_the_key_once_with_the_webhook_endpoint(schemas, capsys):
    status, out, _ = run(capsys, "tenant", "create", "--name", "Beta GmbH")
    assert status == 0
    assert "api_key: dk_" in out and "/v1/webhooks/stripe/ten_" in out and "not shown again" in out


def test_an_operator_pauses_and_resumes_a_relay(schemas, capsys):
    assert run(capsys, "migrate")[0] == 0
    status, out, _ = run(capsys, "relay", "pause", "--service", "invoice-ingest", "--json")
    assert status == 0
    paused = json.loads(out)
    assert paused["service"] == "ingest" and paused["paused"] is True and paused["changed_by"].startswith("admin:")
    assert paused["outbox_rows_waiting"] == 0
    assert json.loads(run(capsys, "relay", "status", "--service", "ingest", "--json")[1])["paused"] is True
    assert json.loads(run(capsys, "relay", "resume", "--service", "ingest", "--json")[1])["paused"] is False
    assert json.loads(run(capsys, "relay", "status", "--service", "scheduler", "--json")[1])["paused"] is False
    with pytest.raises(SystemExit, match="unknown service"):
        main(["relay", "status", "--service", "billing"])


POLICY = {"id": "pol_demo", "anchor": "issued_at", "stages": [{"name": "soft", "offset": "PT5S"}]}


def test_policy_put_validates_like_the_api_and_get_shows_the_active_version(schemas, tmp_path, capsys):
    assert run(capsys, "migrate")[0] == 0
    status, out, _ = run(capsys, "policy", "get", "--tenant", "ten_cli")
    assert status == 0 and json.loads(out)["source"] == "default"

    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    status, out, _ = run(capsys, "policy", "put", "--tenant", "ten_cli", "--file", str(path))
    assert status == 0
    stored = json.loads(out)
    assert stored["version"] == 1 and stored["created"] is True
    assert stored["policy"]["stages"] == [{"name": "soft", "offset": "PT5S", "template": "soft", "channels": ["email"]}]
    assert json.loads(run(capsys, "policy", "put", "--tenant", "ten_cli", "--file", str(path))[1])["created"] is False
    shown = json.loads(run(capsys, "policy", "get", "--tenant", "ten_cli")[1])
    assert shown["policy_id"] == "pol_demo" and shown["source"] == "tenant" and shown["version"] == 1

    path.write_text(json.dumps({"stages": [{"name": "soft", "offset": "soon"}]}))
    status, _, err = run(capsys, "policy", "put", "--tenant", "ten_cli", "--file", str(path))
    assert status == 2 and "stages.0.offset" in err
    path.write_text("{nope")
    with pytest.raises(SystemExit) as exited:
        main(["policy", "put", "--tenant", "ten_cli", "--file", str(path)])
    assert exited.value.code == 2


def test_policy_put_applied_to_open_invoices_starts_their_replan(infra, schemas, tmp_path, capsys):
    assert run(capsys, "migrate")[0] == 0
    in_schema(
        infra,
        schemas["scheduler"],
        "INSERT INTO invoices (invoice_id, tenant_id, planned_at) VALUES ($1, 'ten_cli', now()), ($2, 'ten_cli', now())"
        " RETURNING 1",
        "inv_cli0000000001",
        "inv_cli0000000002",
    )
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    status, out, _ = run(capsys, "policy", "put", "--tenant", "ten_cli", "--file", str(path))
    assert status == 0 and json.loads(out)["replan"] is None  # new invoices only, by default

    status, out, _ = run(
        capsys, "policy", "put", "--tenant", "ten_cli", "--file", str(path), "--apply-to", "open_invoices"
    )
    assert status == 0
    shown = json.loads(out)
    assert shown["created"] is False and shown["version"] == 1  # the same document: no new version...
    replan = shown["replan"]  # ...but the open invoices are re-planned with it, by the scheduler
    assert replan["status"] == "running" and replan["policy_version"] == 1 and replan["invoices_total"] == 2
    assert (
        in_schema(infra, schemas["scheduler"], "SELECT status FROM replans WHERE replan_id = $1", replan["replan_id"])
        == "running"
    )
    with pytest.raises(SystemExit) as exited:
        main(["policy", "put", "--tenant", "ten_cli", "--file", str(path), "--apply-to", "everything"])
    assert exited.value.code == 2


def test_policy_schema_is_the_model_the_api_documents(capsys):
    status, out, _ = run(capsys, "policy", "schema")
    schema = json.loads(out)
    assert status == 0 and schema["title"] == "PolicyDocument" and schema["required"] == ["stages"]
