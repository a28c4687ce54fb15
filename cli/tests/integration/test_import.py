"""`dunning import invoices` against a real invoice-ingest process (its HTTP API on a free port, the
test PostgreSQL and broker): a mapped CSV imported, rejected rows in the errors file, a changed file
re-imported as updates, and an import killed part-way and resumed without a duplicate."""

import asyncio
import csv
import json
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from dunning import tenancy
from dunning.db import migrate, migrations_of
from dunning_cli.main import main
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.service import ServiceProc, service_env
from dunning_tools.testing.kafka import commit_group_at_end

pytestmark = pytest.mark.integration


class Ingest:
    """The ingest process, seen by one test: its own tenant and API key on the module's server."""

    def __init__(self, proc: ServiceProc, database_url: str, schema: str, tenant_id: str, api_key: str):
        self.proc, self.database_url, self.schema = proc, database_url, schema
        self.tenant_id, self.api_key = tenant_id, api_key

    @property
    def url(self) -> str:
        return self.proc.url

    def fetch(self, query: str, *args) -> list[asyncpg.Record]:
        return asyncio.run(_fetch(self.database_url, self.schema, query, *args))

    def invoices(self) -> dict[str, asyncpg.Record]:
        rows = self.fetch(
            "SELECT external_id, amount_due, due_date, metadata FROM invoices WHERE tenant_id = $1", self.tenant_id
        )
        return {r["external_id"]: r for r in rows}


async def _fetch(database_url: str, schema: str, query: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def server(infra, tmp_path_factory):
    """invoice-ingest as a process on a schema of its own, for the whole module (each test has its
    own tenant on it)."""
    schema = f"t_cli_import_{uuid.uuid4().hex[:8]}"
    migrate(infra.database_url, schema, migrations_of("dunning_ingest"))
    asyncio.run(commit_group_at_end(infra.kafka_bootstrap_servers, f"ingest-{schema}"))
    port = free_port()
    env = service_env(
        "INGEST_",
        infra.database_url,
        infra.kafka_bootstrap_servers,
        port,
        db_schema=schema,
        consumer_group=f"ingest-{schema}",
        relay_enabled="false",
        auth_cache_seconds=0,
        db_pool_min=1,
    )
    proc = ServiceProc("invoice-ingest", "dunning_ingest", port, env, tmp_path_factory.mktemp("ingest") / "ingest.log")
    proc.start()
    proc.wait_ready()
    yield proc, schema
    proc.stop()


@pytest.fixture
def ingest(infra, server) -> Ingest:
    proc, schema = server
    tenant_id, api_key = f"ten_{uuid.uuid4().hex[:12]}", f"dk_test_{uuid.uuid4().hex}"

    async def provision():
        conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": schema})
        try:
            await tenancy.provision(conn, tenant_id, "Acme", api_key)
        finally:
            await conn.close()

    asyncio.run(provision())
    return Ingest(proc, infra.database_url, schema, tenant_id, api_key)


# An export the way a German accounting system writes it: semicolons, a BOM, day-first dates, decimal
# commas, its own column names.
HEADER = ["Rechnungsnr", "Kunde", "Kundennr", "E-Mail", "Datum", "Fällig", "Betrag", "Währung", "Bestellnr"]
MAPPING = """\
columns:
  Rechnungsnr: [external_id, number]
  Kunde: customer_name
  Kundennr: customer_external_id
  E-Mail: customer_email
  Datum: issue_date
  Fällig: due_date
  Betrag: amount_due
  Währung: currency
  Bestellnr: metadata.po_number
defaults:
  customer_locale: de-DE
  customer_timezone: Europe/Berlin
date_format: "%d.%m.%Y"
decimal_comma: true
"""


def export_row(i: int, **changes: str) -> dict[str, str]:
    row = {
        "Rechnungsnr": f"RE-{i:05d}",
        "Kunde": f"Kunde {i % 7} GmbH",
        "Kundennr": f"K{i % 7}",
        "E-Mail": f"ap{i % 7}@kunde.de",
        "Datum": "02.11.2026",
        "Fällig": "16.11.2026",
        "Betrag": f"{1000 + i},50",
        "Währung": "EUR",
        "Bestellnr": f"PO-{i}",
    }
    return {**row, **changes}


def write_export(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.DictWriter(out, HEADER, delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_import(capsys, ingest: Ingest, path: Path, *extra: str) -> tuple[int, dict, str]:
    status = main(
        [
            "import",
            "invoices",
            str(path),
            "--url",
            ingest.url,
            "--api-key",
            ingest.api_key,
            "--json",
            "--no-progress",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else {}), err


def errors_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def mapping(tmp_path) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


def test_a_mapped_csv_export_imports_every_invoice(ingest, mapping, tmp_path, capsys):
    path = write_export(tmp_path / "export.csv", [export_row(i) for i in range(25)])
    status, summary, _ = run_import(capsys, ingest, path, "--mapping", str(mapping), "--batch-size", "10")
    assert status == 0
    assert summary == {
        "file": str(path),
        "rows": 25,
        "created": 25,
        "updated": 0,
        "existing": 0,
        "rejected": 0,
        "skipped": 0,
    }
    stored = ingest.invoices()
    assert len(stored) == 25
    assert stored["RE-00003"]["amount_due"] == Decimal("1003.50")
    assert str(stored["RE-00003"]["due_date"]) == "2026-11-16"
    assert json.loads(stored["RE-00003"]["metadata"]) == {"po_number": "PO-3"}
    assert errors_of(tmp_path / "export.csv.errors.csv") == []

    status, summary, err = run_import(capsys, ingest, path, "--mapping", str(mapping))
    assert status == 0 and summary["created"] == 25  # already done: the same summary, nothing sent
    assert "imported already" in err
    status, summary, _ = run_import(capsys, ingest, path, "--mapping", str(mapping), "--restart")
    assert status == 0 and (summary["created"], summary["existing"]) == (0, 25)  # asked afresh, not replayed
    assert len(ingest.invoices()) == 25


def test_rejected_rows_land_in_the_errors_file_with_the_input_column_and_the_reason(ingest, mapping, tmp_path, capsys):
    rows = [export_row(i) for i in range(6)]
    rows[1]["Fällig"] = "2026/11/16"  # not the mapping's format: the CLI rejects it
    rows[2]["E-Mail"] = "not-an-address"  # the server rejects it
    rows[3]["Währung"] = "EUX"  # the server rejects it
    rows[4]["Kunde"] = ""  # required: the CLI rejects it
    path = write_export(tmp_path / "export.csv", rows)
    status, summary, _ = run_import(capsys, ingest, path, "--mapping", str(mapping))
    assert status == 1
    assert (summary["created"], summary["rejected"]) == (2, 4)
    assert set(ingest.invoices()) == {"RE-00000", "RE-00005"}
    found = {(e["row"], e["external_id"], e["column"]): e for e in errors_of(tmp_path / "export.csv.errors.csv")}
    assert set(found) == {
        ("3", "RE-00001", "Fällig"),
        ("4", "RE-00002", "E-Mail"),
        ("5", "RE-00003", "Währung"),
        ("6", "RE-00004", "Kunde"),
    }
    assert found[("3", "RE-00001", "Fällig")]["code"] == "date_format"
    assert "%d.%m.%Y" in found[("3", "RE-00001", "Fällig")]["message"]
    assert found[("6", "RE-00004", "Kunde")]["code"] == "missing"
    assert all(e["message"] for e in found.values())


def test_a_changed_file_imported_again_reports_updated_and_existing(ingest, mapping, tmp_path, capsys):
    rows = [export_row(i) for i in range(10)]
    path = write_export(tmp_path / "export.csv", rows)
    assert run_import(capsys, ingest, path, "--mapping", str(mapping))[0] == 0

    rows[2]["Betrag"] = "999,00"  # an amount corrected
    rows[5]["Fällig"] = "30.11.2026"  # a due date moved
    rows.append(export_row(10))  # a new invoice
    write_export(path, rows)
    status, summary, err = run_import(capsys, ingest, path, "--mapping", str(mapping))
    assert status == 0, err
    assert (summary["created"], summary["updated"], summary["existing"]) == (1, 2, 8)
    stored = ingest.invoices()
    assert len(stored) == 11
    assert stored["RE-00002"]["amount_due"] == Decimal("999.00")
    assert str(stored["RE-00005"]["due_date"]) == "2026-11-30"


def test_a_currency_change_is_a_conflict_reported_under_the_input_column(ingest, mapping, tmp_path, capsys):
    rows = [export_row(i) for i in range(3)]
    path = write_export(tmp_path / "export.csv", rows)
    assert run_import(capsys, ingest, path, "--mapping", str(mapping))[0] == 0
    rows[1]["Währung"] = "GBP"  # currency never changes
    write_export(path, rows)
    status, summary, _ = run_import(capsys, ingest, path, "--mapping", str(mapping))
    assert status == 1 and (summary["existing"], summary["rejected"]) == (2, 1)
    [error] = errors_of(tmp_path / "export.csv.errors.csv")
    assert (error["row"], error["external_id"], error["column"]) == ("3", "RE-00001", "Währung")
    assert error["message"]


def test_an_import_killed_part_way_resumes_after_the_last_batch_without_duplicates(ingest, mapping, tmp_path, capsys):
    total = 3000
    path = write_export(tmp_path / "export.csv", [export_row(i) for i in range(total)])
    state = tmp_path / "export.csv.import-state.json"
    argv = ["-m", "dunning_cli", "import", "invoices", str(path), "--mapping", str(mapping), "--batch-size", "100"]
    cli = subprocess.Popen(
        [sys.executable, *argv, "--url", ingest.url, "--api-key", ingest.api_key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and cli.poll() is None:
            if state.exists() and json.loads(state.read_text())["rows_done"] > 0:
                break
            time.sleep(0.005)
        assert cli.poll() is None, "the import finished before it could be interrupted"
        # A batch in flight when the CLI dies: freeze the server, kill the CLI, let the server finish it.
        ingest.proc.kill(signal.SIGSTOP)
        time.sleep(0.2)
        cli.kill()
        cli.wait(10)
    finally:
        ingest.proc.kill(signal.SIGCONT)
    done = json.loads(state.read_text())["rows_done"]
    assert 0 < done < total

    status, summary, err = run_import(capsys, ingest, path, "--mapping", str(mapping), "--batch-size", "100")
    assert status == 0, err
    assert f"resuming {path} after row {done} of {total}" in err
    assert (summary["created"], summary["rejected"]) == (total, 0)
    assert len(ingest.invoices()) == total
    duplicates = ingest.fetch(
        "SELECT external_id FROM invoices WHERE tenant_id = $1 GROUP BY external_id HAVING count(*) > 1",
        ingest.tenant_id,
    )
    assert duplicates == []


def test_an_unreachable_server_stops_the_import_and_the_same_command_later_continues(ingest, mapping, tmp_path, capsys):
    path = write_export(tmp_path / "export.csv", [export_row(i) for i in range(5)])
    dead = f"http://127.0.0.1:{free_port()}"
    status = main(
        [
            "import",
            "invoices",
            str(path),
            "--mapping",
            str(mapping),
            "--url",
            dead,
            "--api-key",
            ingest.api_key,
            "--retries",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "retrying in" in err and "gave up after 1 retries" in err and "run the same command to resume" in err
    status, summary, _ = run_import(capsys, ingest, path, "--mapping", str(mapping))
    assert status == 0 and summary["created"] == 5


def test_a_refused_request_stops_with_the_servers_reason(ingest, mapping, tmp_path, capsys):
    path = write_export(tmp_path / "export.csv", [export_row(1)])
    status = main(
        [
            "import",
            "invoices",
            str(path),
            "--mapping",
            str(mapping),
            "--url",
            ingest.url,
            "--api-key",
            "dk_wrong_key_000000000000000",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 1 and "the server refused the batch: 401" in err
    assert ingest.invoices() == {}


def test_json_lines_in_the_apis_own_shape_import_without_a_mapping(ingest, tmp_path, capsys):
    path = tmp_path / "invoices.jsonl"
    lines = [
        {
            "external_id": f"in_{i}",
            "number": f"INV-{i}",
            "customer": {
                "external_id": "c1",
                "name": "Acme",
                "email": "ap@acme.de",
                "locale": "en-GB",
                "timezone": "Europe/London",
            },
            "currency": "GBP",
            "amount_due": "250.00",
            "issue_date": "2026-11-02",
            "due_date": "2026-11-16",
        }
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    status, summary, _ = run_import(capsys, ingest, path)
    assert status == 1 and (summary["created"], summary["rejected"]) == (3, 1)
    assert errors_of(tmp_path / "invoices.jsonl.errors.csv")[0]["row"] == "4"


def test_a_bad_mapping_fails_before_anything_is_sent_naming_the_column(ingest, tmp_path, capsys):
    path = write_export(tmp_path / "export.csv", [export_row(1)])
    bad = tmp_path / "bad.yaml"
    bad.write_text(MAPPING.replace("Fällig: due_date", "Faellig: due_date"), encoding="utf-8")
    status = main(
        ["import", "invoices", str(path), "--mapping", str(bad), "--url", ingest.url, "--api-key", ingest.api_key]
    )
    assert status == 2
    assert "column 'Faellig' (for due_date) is not in the file's header" in capsys.readouterr().err
    assert ingest.invoices() == {}
    assert not (tmp_path / "export.csv.import-state.json").exists()


XERO_HEADER = (
    "*ContactName,EmailAddress,POAddressLine1,POAddressLine2,POAddressLine3,POAddressLine4,POCity,PORegion,"
    "POPostalCode,POCountry,*InvoiceNumber,Reference,*InvoiceDate,*DueDate,Total,TaxTotal,InvoiceAmountPaid,"
    "InvoiceAmountDue,InventoryItemCode,*Description,*Quantity,*UnitAmount,Discount,LineAmount,*AccountCode,"
    "*TaxType,TaxAmount,TrackingName1,TrackingOption1,TrackingName2,TrackingOption2,Currency,Type,Sent,Status"
)


def xero_line(contact: str, number: str, description: str, status: str = "Awaiting Payment") -> str:
    return (
        f"{contact},ap@{contact.lower()}.co.uk,1 High St,,,,London,,EC1A 1AA,GB,{number},PO-{number},"
        f'02/11/2026,16/11/2026,1200.00,200.00,200.00,1000.00,,"{description}",1,500.00,,500.00,200,'
        f"20% (VAT on Income),100.00,,,,,GBP,Sales invoice,Sent,{status}"
    )


QBO_EXPORT = (
    '"Invoice List"\n"Acme Widgets Inc."\n"All Dates"\n\n'
    ",Date,Num,Customer,Email,Due Date,Amount,Open Balance\n"
    ',11/02/2026,1001,Cool Cars,ap@coolcars.com,11/16/2026,"$1,250.00","$1,250.00"\n'
    ",11/03/2026,1002,Amy's Bird Sanctuary,ap@amysbirds.com,12/03/2026,$80.00,$30.00\n"
    ",11/04/2026,1003,Cool Cars,ap@coolcars.com,12/04/2026,$99.00,$0.00\n"
    'TOTAL,,,,,,"$1,429.00","$1,280.00"\n'
    "\n"
    '"Monday, November 30, 2026 09:41 AM GMT-08:00"\n'
)


@pytest.mark.parametrize(
    "mapping_name, content, expected",
    [
        pytest.param(
            "xero",
            "\n".join(
                [
                    XERO_HEADER,
                    xero_line("Brandt", "INV-0001", "Consulting"),
                    xero_line("Brandt", "INV-0001", "Travel"),  # the same invoice's second line
                    xero_line("Globex", "INV-0002", "Widgets"),
                    xero_line("Globex", "INV-0003", "Paid already", status="Paid"),
                ]
            )
            + "\n",
            {"INV-0001": Decimal("1000.00"), "INV-0002": Decimal("1000.00")},
            id="xero-invoices-export",
        ),
        pytest.param(
            "quickbooks-online",
            QBO_EXPORT,
            {"1001": Decimal("1250.00"), "1002": Decimal("30.00")},
            id="quickbooks-online-invoice-list",
        ),
    ],
)
def test_the_shipped_mappings_import_their_exports(ingest, tmp_path, capsys, mapping_name, content, expected):
    path = tmp_path / "export.csv"
    path.write_text(content, encoding="utf-8")
    status, summary, err = run_import(capsys, ingest, path, "--mapping", mapping_name)
    assert status == 0, err
    assert (summary["created"], summary["rejected"]) == (len(expected), 0)
    assert {ext: row["amount_due"] for ext, row in ingest.invoices().items()} == expected
