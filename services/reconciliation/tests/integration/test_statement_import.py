"""Bank statements through the real app and PostgreSQL: each credit line becomes a payment matched
to its invoices (or queued), a statement imported twice changes nothing, an overlapping statement's
lines are duplicates, a bad file is refused whole, and a crashed import resumes where it stopped."""

import asyncio
from pathlib import Path

import pytest

from dunning_reconciliation import match_service, statements_import

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "statements"
XML = {"Content-Type": "application/xml"}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


async def issue(pool, h, number: str, amount: str, **kw) -> str:
    issued = h.invoice_issued(number=number, amount_due=amount, **kw)
    await h.handle_invoice(pool, issued)
    return issued["subject"]


async def invoices(pool, h) -> dict[str, str]:
    """The invoices the v02 fixture's remittances name, oldest first."""
    return {
        "INV-1001": await issue(pool, h, "INV-1001", "1000.00"),
        "INV-1004": await issue(pool, h, "INV-1004", "500.00"),
        "INV-1002": await issue(pool, h, "INV-1002", "1000.00"),
        "INV-1005": await issue(pool, h, "INV-1005", "400.00"),
    }


async def stored(pool) -> dict[str, int]:
    tables = ("statements", "statement_lines", "payments", "allocations", "outbox")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


def by_remittance(body: dict) -> dict[str | None, dict]:
    return {line["remittance"]: line for line in body["outcomes"]}


async def test_a_camt_statement_allocates_its_credit_lines_and_queues_the_rest(pool, client, h):
    inv = await invoices(pool, h)

    response = await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["duplicate"], body["format"], body["lines"], body["credits"], body["skipped"]) == (
        False,
        "camt053",
        9,
        7,
        2,
    )
    assert body["matched"] + body["unmatched"] == 7 and body["duplicates"] == 0
    [statement] = body["statements"]
    assert (statement["account"], statement["bank_statement_id"], statement["status"]) == (
        "DE89370400440532013000",
        "ACME-2026-11-02",
        "imported",
    )
    lines = by_remittance(body)
    both = lines["INV-1001 INV-1004 less credit"]  # one transfer for two invoices, oldest first
    assert (both["status"], both["invoice_ids"]) == ("applied", [inv["INV-1001"], inv["INV-1004"]])
    short = lines["Invoice INV-1002 part payment"]
    assert (short["status"], short["invoice_ids"]) == ("applied", [inv["INV-1002"]])
    assert lines["INV-1005"]["invoice_ids"] == [inv["INV-1005"]]  # 500 paid on 400: the excess is credit
    debit = lines["Account fees November"]
    assert (debit["kind"], debit["status"], debit["payment_id"]) == ("debit", "skipped", None)
    nothing = [ln for ln in body["outcomes"] if ln["payer_name"] == "Unknown Payer"][0]
    assert (nothing["status"], nothing["invoice_ids"]) == ("unmatched", [])

    payments = await pool.fetch(
        "SELECT source, source_reference, payer_account, remittance, statement_id FROM payments ORDER BY received_at"
    )
    assert len(payments) == 7 and {p["source"] for p in payments} == {"bank_statement"}
    assert {p["statement_id"] for p in payments} == {statement["statement_id"]}
    assert "DE02120300000000202051" in {p["payer_account"] for p in payments}
    # INV-1005 was paid 500 on 400: the 100 excess became the customer's credit, applied at once to
    # its oldest open invoices (INV-1004's last 50, then 50 of INV-1002)
    balances = dict(await pool.fetch("SELECT number, balance FROM invoices"))
    assert {n: str(b) for n, b in balances.items()} == {
        "INV-1001": "0.00",
        "INV-1004": "0.00",
        "INV-1002": "650.00",
        "INV-1005": "0.00",
    }


async def test_the_same_file_twice_answers_the_first_result_and_changes_nothing(pool, client, h):
    await invoices(pool, h)
    first = await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})
    before = await stored(pool)

    again = await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True and again.json()["statements"][0]["duplicate"] is True
    strip = lambda b: {k: v for k, v in b.items() if k != "duplicate" and k != "statements"}  # noqa: E731
    assert strip(again.json()) == strip(first.json())
    assert await stored(pool) == before


async def test_an_overlapping_statement_skips_the_lines_already_seen(pool, client, h):
    await invoices(pool, h)
    await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})
    payments_before = await pool.fetchval("SELECT count(*) FROM payments")
    # the same day again inside a statement with another id (a monthly statement overlapping the daily one)
    overlapping = fixture("camt053_v02_acme.xml").replace(b"<Id>ACME-2026-11-02</Id>", b"<Id>ACME-2026-11-M</Id>")

    response = await client.post("/v1/statements", content=overlapping, headers={**h.AUTH, **XML})

    body = response.json()
    assert response.status_code == 201 and body["duplicate"] is False
    assert (body["duplicates"], body["matched"], body["unmatched"]) == (9, 0, 0)
    assert {ln["status"] for ln in body["outcomes"]} == {"duplicate"}
    assert await pool.fetchval("SELECT count(*) FROM payments") == payments_before


async def test_a_statement_already_imported_from_another_file_is_a_duplicate(pool, client, h):
    await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})
    # the same statement (account + id), re-exported: another file, same statement
    reexported = fixture("camt053_v02_acme.xml").replace(b"<MsgId>ACME-STMT-20261102</MsgId>", b"<MsgId>RE</MsgId>")

    response = await client.post("/v1/statements", content=reexported, headers={**h.AUTH, **XML})

    assert response.status_code == 200 and response.json()["duplicate"] is True
    assert await pool.fetchval("SELECT count(*) FROM statements") == 1


async def test_mt940_by_multipart_upload_and_by_raw_body_with_its_format(pool, client, h):
    inv = await issue(pool, h, "INV-1007", "700.00")
    await issue(pool, h, "INV-1008", "500.00")
    upload = await client.post(
        "/v1/statements", files={"file": ("acme.sta", fixture("mt940_acme.sta"), "text/plain")}, headers=h.AUTH
    )
    assert upload.status_code == 201, upload.text
    body = upload.json()
    assert (body["format"], body["filename"], body["lines"], body["credits"], body["skipped"]) == (
        "mt940",
        "acme.sta",
        4,
        3,
        1,
    )
    first = body["outcomes"][0]
    assert (first["remittance"], first["status"], first["invoice_ids"][0]) == (
        "INV-1007 INV-1008 less credit",
        "applied",
        inv,
    )

    v08 = fixture("camt053_v08_acme.xml")
    raw = await client.post(
        "/v1/statements",
        params={"format": "camt053", "filename": "v08.xml"},
        content=v08,
        headers={**h.AUTH, "Content-Type": "application/octet-stream"},
    )
    assert raw.status_code == 201 and raw.json()["filename"] == "v08.xml"
    assert [ln["kind"] for ln in raw.json()["outcomes"]] == ["credit", "credit", "not_booked"]


@pytest.mark.parametrize(
    ("content", "params", "field"),
    [
        pytest.param(b"not a statement", {}, "file", id="neither-format"),
        pytest.param(
            fixture("camt053_v02_acme.xml").replace(b">300.00<", b">300.001<"),
            {},
            "Stmt[1]/Ntry[2]/Amt",
            id="too-many-decimals",
        ),
        pytest.param(
            fixture("camt053_v02_acme.xml").replace(b'Ccy="EUR">250.00', b'Ccy="EUX">250.00'),
            {},
            "Stmt[1]/Ntry[5]/Amt/@Ccy",
            id="unknown-currency",
        ),
        pytest.param(fixture("mt940_acme.sta"), {"format": "camt053"}, "file", id="wrong-declared-format"),
        pytest.param(fixture("mt940_acme.sta"), {"format": "csv"}, "format", id="unknown-format"),
    ],
)
async def test_a_bad_file_is_refused_whole_naming_the_element(pool, client, h, content, params, field):
    await invoices(pool, h)
    before = await stored(pool)

    response = await client.post(
        "/v1/statements", content=content, params=params, headers={**h.AUTH, "Content-Type": "text/plain"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert await stored(pool) == before


async def test_a_file_over_the_size_limit_is_413(pool, client, h):
    response = await client.post("/v1/statements", content=b"<" * (21 * 1024 * 1024), headers={**h.AUTH, **XML})
    assert response.status_code == 413
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0


async def test_statements_are_listed_and_their_lines_paged(pool, client, h):
    await client.post("/v1/statements", content=fixture("camt053_v02_acme.xml"), headers={**h.AUTH, **XML})
    await client.post(
        "/v1/statements", content=fixture("mt940_acme.sta"), headers={**h.AUTH, "Content-Type": "text/plain"}
    )

    listed = (await client.get("/v1/statements", params={"limit": 1}, headers=h.AUTH)).json()
    rest = (await client.get("/v1/statements", params={"cursor": listed["next_cursor"]}, headers=h.AUTH)).json()
    ids = [s["statement_id"] for s in listed["data"] + rest["data"]]
    assert len(ids) == 2 and rest["next_cursor"] is None

    camt = next(s for s in listed["data"] + rest["data"] if s["format"] == "camt053")
    one = await client.get(f"/v1/statements/{camt['statement_id']}", headers=h.AUTH)
    assert (one.status_code, one.json()["lines"], one.json()["opening_balance"]) == (200, 9, "10000.00")
    page1 = (
        await client.get(f"/v1/statements/{camt['statement_id']}/lines", params={"limit": 5}, headers=h.AUTH)
    ).json()
    page2 = (
        await client.get(
            f"/v1/statements/{camt['statement_id']}/lines", params={"cursor": page1["next_cursor"]}, headers=h.AUTH
        )
    ).json()
    assert [ln["position"] for ln in page1["data"] + page2["data"]] == list(range(1, 10))
    missing = await client.get("/v1/statements/stm_doesnotexist00", headers=h.AUTH)
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "statement_id"
    other = await client.get("/v1/statements", headers={"Authorization": "Bearer wrong"})
    assert other.status_code == 401


async def test_a_crashed_import_resumes_after_its_last_chunk_without_paying_twice(pool, h):
    await invoices(pool, h)
    calls = 0

    async def crashing(conn, payments):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the database went away")
        return await match_service.match_and_allocate(conn, payments)

    with pytest.raises(ConnectionError):
        await statements_import.import_statement(
            pool, h.TENANT, fixture("camt053_v02_acme.xml"), filename="a.xml", match=crashing, chunk=2
        )
    row = await pool.fetchrow("SELECT status, lines_done FROM statements")
    assert (row["status"], row["lines_done"]) == ("importing", 2)

    result = await statements_import.import_statement(
        pool, h.TENANT, fixture("camt053_v02_acme.xml"), filename="a.xml", chunk=2
    )

    assert (result["duplicate"], result["lines"], result["duplicates"], result["skipped"]) == (False, 9, 0, 2)
    assert result["matched"] + result["unmatched"] == 7
    assert await pool.fetchval("SELECT count(*) FROM payments") == 7
    assert [ln["position"] for ln in result["outcomes"]] == list(range(1, 10))


async def test_a_statement_without_entries_is_imported_and_a_second_time_a_duplicate(pool, client, h):
    empty = fixture("camt053_v08_acme.xml")
    empty = empty[: empty.index(b"<Ntry>")] + b"</Stmt></BkToCstmrStmt></Document>"

    first = await client.post("/v1/statements", content=empty, headers={**h.AUTH, **XML})
    again = await client.post("/v1/statements", content=empty, headers={**h.AUTH, **XML})

    assert first.status_code == 201 and first.json()["statements"][0]["status"] == "imported"
    assert (first.json()["lines"], first.json()["statements"][0]["closing_balance"]) == (0, "14815.50")
    assert again.status_code == 200 and again.json()["duplicate"] is True


async def test_the_same_file_uploaded_twice_at_once_pays_each_line_once(pool, client, h):
    await invoices(pool, h)
    data = fixture("camt053_v02_acme.xml")

    first, second = await asyncio.gather(
        client.post("/v1/statements", content=data, headers={**h.AUTH, **XML}),
        client.post("/v1/statements", content=data, headers={**h.AUTH, **XML}),
    )

    assert {first.status_code, second.status_code} <= {200, 201}
    assert await pool.fetchval("SELECT count(*) FROM payments") == 7
    assert await pool.fetchval("SELECT count(*) FROM statement_lines") == 9
    balances = dict(await pool.fetch("SELECT number, balance FROM invoices"))
    assert {n: str(b) for n, b in balances.items()} == {  # as after one import
        "INV-1001": "0.00",
        "INV-1004": "0.00",
        "INV-1002": "650.00",
        "INV-1005": "0.00",
    }


async def test_a_batch_line_in_another_currency_keeps_its_currency(pool, client, h):
    data = fixture("camt053_v02_acme.xml").replace(b'<Amt Ccy="EUR">65.50</Amt>', b'<Amt Ccy="CHF">65.50</Amt>')

    body = (await client.post("/v1/statements", content=data, headers={**h.AUTH, **XML})).json()

    [line] = [ln for ln in body["outcomes"] if ln["payer_name"] == "Wide World Importers"]
    assert (line["amount"], line["currency"]) == ("65.50", "CHF")


REFERENCE = next(
    (
        p / "shared" / "reference-data"
        for p in Path(__file__).resolve().parents
        if (p / "shared/reference-data").is_dir()
    ),
    None,
)


@pytest.mark.skipif(REFERENCE is None, reason="shared/reference-data is not beside this checkout")
@pytest.mark.parametrize(
    ("name", "lines", "credits"),
    [
        pytest.param("camt/camt053.001.02_abnamro_oca.xml", 4, 1, id="abnamro-camt"),
        pytest.param("camt/camt053.001.04_postfinance_dvbern.xml", 32, 24, id="postfinance-chf"),
        pytest.param("camt/camt053.001.08_lt_subite.xml", 15, 3, id="lt-v08-two-statements"),
        pytest.param("mt940/sepa_snippet_de.sta", 11, 5, id="german-mt940-two-accounts"),
        pytest.param("mt940/rabobank-iban.sta", 4, 0, id="rabobank-debits-only"),
    ],
)
async def test_public_sample_statements_import_whole(pool, client, h, name, lines, credits):
    data = (REFERENCE / name).read_bytes()

    response = await client.post("/v1/statements", content=data, headers={**h.AUTH, "Content-Type": "text/plain"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["lines"], body["credits"], body["matched"] + body["unmatched"]) == (lines, credits, credits)
    assert await pool.fetchval("SELECT count(*) FROM payments WHERE source = 'bank_statement'") == credits
