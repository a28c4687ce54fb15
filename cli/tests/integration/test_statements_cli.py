"""`dunning statements import` against a real reconciliation process (its HTTP API on a free port,
the test PostgreSQL and broker): a statement's lines matched and queued, the same file again changing
nothing, a two-statement file sent as two requests, and a bad file refused naming the element."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from dunning import tenancy
from dunning.db import create_pool, migrate, migrations_of
from dunning.events import decode, dumps
from dunning_cli.main import main
from dunning_reconciliation.handlers import on_invoice_issued
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.service import ServiceProc, service_env
from dunning_tools.testing import events
from dunning_tools.testing.kafka import commit_group_at_end

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[3] / "services" / "reconciliation" / "tests" / "fixtures" / "statements"


@pytest.fixture(scope="module")
def server(infra, tmp_path_factory):
    schema = f"t_cli_statements_{uuid.uuid4().hex[:8]}"
    migrate(infra.database_url, schema, migrations_of("dunning_reconciliation"))
    asyncio.run(commit_group_at_end(infra.kafka_bootstrap_servers, f"reconciliation-{schema}"))
    port = free_port()
    env = service_env(
        "RECONCILIATION_",
        infra.database_url,
        infra.kafka_bootstrap_servers,
        port,
        db_schema=schema,
        consumer_group=f"reconciliation-{schema}",
        relay_enabled="false",
        watermark_enabled="false",
        auth_cache_seconds=0,
        db_pool_min=1,
    )
    log = tmp_path_factory.mktemp("reconciliation") / "reconciliation.log"
    proc = ServiceProc("reconciliation", "dunning_reconciliation", port, env, log)
    proc.start()
    proc.wait_ready()
    yield proc, schema
    proc.stop()


@pytest.fixture
def tenant(infra, server):
    """A tenant of its own on the module's server, with invoices INV-1001, INV-1004 and INV-1002."""
    proc, schema = server
    tenant_id, api_key = f"ten_{uuid.uuid4().hex[:12]}", f"dk_test_{uuid.uuid4().hex}"

    async def provision():
        pool = await create_pool(infra.database_url, schema, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await tenancy.provision(conn, tenant_id, "Acme", api_key)
            for number, amount in (("INV-1001", "1000.00"), ("INV-1004", "500.00"), ("INV-1002", "1000.00")):
                issued = events.invoice_issued(tenant_id=tenant_id, number=number, amount_due=amount)
                async with pool.acquire() as conn, conn.transaction():
                    await on_invoice_issued(conn, decode(dumps(issued)))
        finally:
            await pool.close()

    asyncio.run(provision())
    return proc.url, schema, tenant_id, api_key


def fetch(infra, schema: str, query: str, *args) -> list[asyncpg.Record]:
    async def go():
        conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": schema})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def cli(url: str, api_key: str, *args: str) -> int:
    return main(["statements", "import", *args, "--url", url, "--api-key", api_key])


def test_a_statement_is_imported_and_its_summary_printed(infra, tenant, capsys):
    url, schema, tenant_id, api_key = tenant

    assert cli(url, api_key, str(FIXTURES / "camt053_v02_acme.xml")) == 0

    out, err = capsys.readouterr()
    assert "ACME-2026-11-02: 9 lines, 7 credits" in out
    assert "skipped 2" in out and "duplicate lines 0" in out
    assert "100.0% 1/1 statements" in err  # the progress line (not a terminal: one line a step)
    paid = fetch(infra, schema, "SELECT number, balance FROM invoices WHERE tenant_id = $1 ORDER BY number", tenant_id)
    assert [(r["number"], str(r["balance"])) for r in paid] == [
        ("INV-1001", "0.00"),
        ("INV-1002", "700.00"),
        ("INV-1004", "50.00"),
    ]

    assert cli(url, api_key, str(FIXTURES / "camt053_v02_acme.xml")) == 0  # again: nothing changes

    out, _ = capsys.readouterr()
    assert "(imported before: nothing changed)" in out
    count = fetch(infra, schema, "SELECT count(*) AS n FROM payments WHERE tenant_id = $1", tenant_id)[0]["n"]
    assert count == 7


def test_a_two_statement_file_goes_as_two_requests(infra, tenant, tmp_path, capsys):
    url, schema, tenant_id, api_key = tenant
    one = (FIXTURES / "mt940_acme.sta").read_bytes()
    two = one.replace(b":20:ACME20261104", b":20:ACME20261105").replace(b"ACME1104", b"ACME1105")
    path = tmp_path / "two.sta"
    path.write_bytes(one + two)

    assert cli(url, api_key, str(path), "--no-progress") == 0

    out, err = capsys.readouterr()
    assert err == "" and out.count("DE89370400440532013000") == 2
    rows = fetch(infra, schema, "SELECT filename FROM statements WHERE tenant_id = $1 ORDER BY filename", tenant_id)
    assert [r["filename"] for r in rows] == ["two.sta#1", "two.sta#2"]


def test_a_bad_file_is_refused_naming_the_element(infra, tenant, tmp_path, capsys):
    url, schema, tenant_id, api_key = tenant
    path = tmp_path / "bad.xml"
    path.write_bytes((FIXTURES / "camt053_v02_acme.xml").read_bytes().replace(b">300.00<", b">300.001<"))

    assert cli(url, api_key, str(path), "--no-progress") == 1

    _, err = capsys.readouterr()
    assert "HTTP 422: Stmt[1]/Ntry[2]/Amt" in err
    assert fetch(infra, schema, "SELECT count(*) AS n FROM statements WHERE tenant_id = $1", tenant_id)[0]["n"] == 0
