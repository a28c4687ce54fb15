"""A statement's first chunk of lines imported while the rest of its file is read (statements_import's
_first_chunk), in a transaction that commits only once the file is read whole: the same end state as
the import one chunk after the other, a bad element after the first chunk changes nothing, first
lines whose keys the rest of the statement changes are imported the usual way, and the same file
twice at once pays each line once."""

import asyncio
from pathlib import Path

import pytest

from dunning_reconciliation import statements_import
from dunning_reconciliation.statements import StatementError

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parents[1] / "fixtures" / "statements"
ACME = (FIXTURES / "camt053_v02_acme.xml").read_bytes()


async def invoices(pool, h) -> None:
    """The invoices the fixture's remittances name (test_statement_import's)."""
    for number, amount in (("INV-1001", "1000.00"), ("INV-1004", "500.00"), ("INV-1002", "1000.00")):
        await h.handle_invoice(pool, h.invoice_issued(number=number, amount_due=amount))
    await h.handle_invoice(pool, h.invoice_issued(number="INV-1005", amount_due="400.00"))


async def stored(pool) -> dict[str, int]:
    tables = ("statements", "statement_lines", "statement_line_keys", "payments", "allocations", "outbox")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


@pytest.fixture
def first_chunks(monkeypatch) -> list[bool | None]:
    """Whether each import's first chunk was imported while its file was read (True) or not (False;
    None: it was begun, and raised)."""
    seen: list[bool | None] = []
    real = statements_import._first_chunk

    async def telling(*args):
        at = len(seen)
        seen.append(None)
        row = await real(*args)
        seen[at] = row is not None
        return row

    monkeypatch.setattr(statements_import, "_first_chunk", telling)
    return seen


async def test_a_first_chunk_read_meanwhile_leaves_what_the_whole_file_read_first_leaves(pool, h, first_chunks):
    await invoices(pool, h)

    result = await statements_import.import_statement(pool, h.TENANT, ACME, filename="a.xml", chunk=2)

    assert first_chunks == [True]
    assert (result["lines"], result["credits"], result["skipped"], result["duplicates"]) == (9, 7, 2, 0)
    assert result["statements"][0]["status"] == "imported"
    assert [ln["position"] for ln in result["outcomes"]] == list(range(1, 10))
    balances = dict(await pool.fetch("SELECT number, balance FROM invoices"))
    assert {n: str(b) for n, b in balances.items()} == {  # as test_statement_import's one-chunk import
        "INV-1001": "0.00",
        "INV-1004": "0.00",
        "INV-1002": "650.00",
        "INV-1005": "0.00",
    }
    again = await statements_import.import_statement(pool, h.TENANT, ACME, filename="a.xml", chunk=2)
    assert again["duplicate"] is True and await pool.fetchval("SELECT count(*) FROM payments") == 7


async def test_a_bad_element_after_the_first_chunk_changes_nothing(pool, h, first_chunks):
    await invoices(pool, h)
    before = await stored(pool)
    bad = ACME.replace(b'Ccy="EUR">250.00', b'Ccy="EUX">250.00')  # line 7's entry

    with pytest.raises(StatementError) as refused:
        await statements_import.import_statement(pool, h.TENANT, bad, filename="bad.xml", chunk=2)

    assert refused.value.field == "Stmt[1]/Ntry[5]/Amt/@Ccy"
    assert await stored(pool) == before
    assert first_chunks == [None]  # its first chunk was begun while the file was read, then rolled back


async def test_first_lines_whose_keys_the_rest_changes_are_imported_the_usual_way(pool, h, first_chunks):
    await invoices(pool, h)
    # the last entry takes the first one's bank reference: the two lines' keys become `…/1` and `…/2`
    twice = ACME.replace(
        b"<AcctSvcrRef>ACME20261102-0006</AcctSvcrRef>", b"<AcctSvcrRef>ACME20261102-0001</AcctSvcrRef>"
    )

    result = await statements_import.import_statement(pool, h.TENANT, twice, filename="b.xml", chunk=2)

    assert first_chunks == [False]
    assert (result["lines"], result["statements"][0]["status"]) == (9, "imported")
    keys = [r["line_key"] for r in await pool.fetch("SELECT line_key FROM statement_lines ORDER BY position")]
    assert keys[0].endswith("ACME20261102-0001/1") and keys[7].endswith("ACME20261102-0001/2")
    assert await pool.fetchval("SELECT count(*) FROM payments") == 7


async def test_the_same_file_twice_at_once_pays_each_line_once(pool, h, first_chunks):
    await invoices(pool, h)

    await asyncio.gather(
        statements_import.import_statement(pool, h.TENANT, ACME, filename="a.xml", chunk=2),
        statements_import.import_statement(pool, h.TENANT, ACME, filename="a.xml", chunk=2),
    )

    assert sorted(first_chunks) == [False, True]  # one claimed the statement; the other carried on after it
    assert await pool.fetchval("SELECT count(*) FROM payments") == 7
    assert await pool.fetchval("SELECT count(*) FROM statement_lines") == 9
    assert await pool.fetchval("SELECT count(*) FROM statements") == 1
