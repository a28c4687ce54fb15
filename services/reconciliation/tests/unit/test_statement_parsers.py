"""Bank statements as banks write them (our own fixtures, and the public samples in shared/ when
they are there): what each format's lines say, and bad files refused whole, naming the element."""

from decimal import Decimal
from pathlib import Path

import pytest

from dunning_reconciliation.statements import StatementError, detect, parse

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).parents[1] / "fixtures" / "statements"
REFERENCE = next(
    (
        p / "shared" / "reference-data"
        for p in Path(__file__).resolve().parents
        if (p / "shared" / "reference-data").is_dir()
    ),
    None,
)
D = Decimal


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def credits_of(name: str) -> list:
    [statement] = parse(fixture(name))
    return list(statement.credits)


def test_camt053_v02_statement_and_balances():
    [s] = parse(fixture("camt053_v02_acme.xml"))
    assert (s.format, s.statement_ref, s.account, s.currency) == (
        "camt053",
        "ACME-2026-11-02",
        "DE89370400440532013000",  # spaces removed
        "EUR",
    )
    assert (s.opening_balance, s.closing_balance) == (D("10000.00"), D("13515.50"))
    assert (len(s.lines), len(s.credits)) == (9, 7)


@pytest.mark.parametrize(
    ("index", "amount", "remittance", "creditor_reference", "payer_name", "payer_account"),
    [
        pytest.param(
            0,
            "1450.00",
            "INV-1001 INV-1004 less credit",
            None,
            "Northwind Traders GmbH",
            "DE02120300000000202051",
            id="multi-invoice-remittance",
        ),
        pytest.param(
            1, "300.00", "Invoice INV-1002 part payment", None, "Contoso Ltd", "GB33BUKB20201555555555", id="short"
        ),
        pytest.param(
            2, "800.00", None, "RF18539007547034", "Fabrikam Inc", "FR1420041010050500013M02606", id="rf-reference"
        ),
        pytest.param(3, "500.00", "INV-1005", None, "Adventure Works", "NL91ABNA0417164300", id="batch-first"),
        pytest.param(4, "400.00", "ACC-77 thank you", None, "Tailspin Toys", None, id="batch-two-ustrd"),
        pytest.param(5, "65.50", None, None, "Wide World Importers", None, id="batch-no-remittance"),
        pytest.param(6, "250.00", None, None, "Unknown Payer", "BE68539007547034", id="no-reference"),
    ],
)
def test_camt053_v02_credit_lines(index, amount, remittance, creditor_reference, payer_name, payer_account):
    line = credits_of("camt053_v02_acme.xml")[index]
    assert (line.amount, line.currency, line.remittance, line.creditor_reference) == (
        D(amount),
        "EUR",
        remittance,
        creditor_reference,
    )
    assert (line.payer_name, line.payer_account) == (payer_name, payer_account)
    assert str(line.booking_date) == "2026-11-02"


def test_camt053_batch_lines_have_their_own_keys_and_references():
    batch = credits_of("camt053_v02_acme.xml")[3:6]
    assert [ln.bank_reference for ln in batch] == [f"ACME20261102-0004-{c}" for c in "ABC"]
    assert [ln.end_to_end_id for ln in batch] == ["E2E-A", "E2E-B", None]
    assert len({ln.key for ln in batch}) == 3


def test_camt053_debits_and_reversals_are_skipped_lines_with_a_note():
    [s] = parse(fixture("camt053_v02_acme.xml"))
    skipped = [ln for ln in s.lines if not ln.is_credit]
    assert [(ln.kind, ln.amount) for ln in skipped] == [("debit", D("12.00")), ("reversal", D("88.00"))]
    assert "RvslInd" in skipped[1].note


def test_camt053_v08_parties_amounts_and_not_booked_entries():
    [s] = parse(fixture("camt053_v08_acme.xml"))
    assert (s.opening_balance, s.closing_balance) == (D("13515.50"), D("14815.50"))  # no CdtDbtInd: credit
    first, second, pending = s.lines
    assert (first.amount, first.payer_name, first.remittance) == (D("600.00"), "Northwind Traders GmbH", "INV-1006")
    assert (second.amount, second.payer_name, second.remittance) == (D("400.00"), "Contoso Ltd", "INV-1002 rest")
    assert str(first.booking_date) == "2026-11-03"  # from BookgDt/DtTm
    assert (pending.kind, pending.note) == ("not_booked", "entry status PDNG: not booked")


def test_mt940_german_tagged_and_free_text_details():
    [s] = parse(fixture("mt940_acme.sta"))
    assert (s.format, s.account, s.currency, s.opening_balance, s.closing_balance) == (
        "mt940",
        "DE89370400440532013000",
        "EUR",
        D("14815.50"),
        D("16121.95"),
    )
    german, tagged, free, debit = s.lines
    assert (german.amount, german.remittance, german.payer_name, german.payer_account, german.end_to_end_id) == (
        D("1200.00"),
        "INV-1007 INV-1008 less credit",
        "Northwind Traders GmbH",
        "DE02120300000000202051",
        "NW-PAY-7790",
    )
    assert (tagged.amount, tagged.remittance, tagged.payer_name, tagged.payer_account, tagged.end_to_end_id) == (
        D("150.00"),
        "INV-1002 remaining balance",
        "Contoso Ltd",
        "GB33BUKB20201555555555",
        None,
    )
    assert free.remittance.endswith("WE DO NOT KNOW YET SO THIS LINE IS WRAPPED")  # a 65-character wrap joined
    assert free.bank_reference is None and free.key.startswith("DE89370400440532013000:#")
    assert (debit.kind, debit.amount) == ("debit", D("45.00"))


def test_line_keys_are_stable_across_files_and_distinct_within_one():
    first = [ln.key for ln in parse(fixture("camt053_v02_acme.xml"))[0].lines]
    again = [ln.key for ln in parse(fixture("camt053_v02_acme.xml").replace(b"ACME-2026-11-02", b"ACME-X"))[0].lines]
    assert first == again and len(set(first)) == len(first)


def test_two_identical_lines_without_reference_stay_two():
    doc = fixture("mt940_acme.sta").replace(b":61:2611041104D45,00NMSCNONREF//ACME1104004\r\n:86:Bank charges", b"")
    line = b":61:2611041104C10,00NTRFNONREF\r\n:86:same text\r\n"
    doc = doc.replace(b":62F:", line + line + b":62F:")
    keys = [ln.key for ln in parse(doc)[0].lines]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("data", "format", "field"),
    [
        pytest.param(b"", None, "file", id="empty"),
        pytest.param(b"hello, bank", None, "file", id="neither-format"),
        pytest.param(b"<Document><BkToCstmrStmt><Stmt>", None, "file", id="not-well-formed"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Document>&x;</Document>',
            None,
            "file",
            id="xxe-refused",
        ),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b"<Document>&b;</Document>",
            None,
            "file",
            id="entity-expansion-refused",
        ),
        pytest.param(
            '<?xml version="1.0" encoding="UTF-16"?><Document/>'.encode("utf-16"), None, "file", id="utf-16-refused"
        ),
        pytest.param(
            b'<?xml version="1.0" encoding="cp037"?>' + "<!DOCTYPE d><Document/>".encode("cp037"),
            "camt053",
            "file",
            id="ebcdic-declared-refused",
        ),
        pytest.param(
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02"><BkToCstmrDbtCdtNtfctn/></Document>',
            None,
            "Document",
            id="camt054-is-not-a-statement",
        ),
        pytest.param(b"<Invoice/>", None, "Document", id="other-xml"),
        pytest.param(b"<Document><BkToCstmrStmt/></Document>", None, "BkToCstmrStmt/Stmt", id="no-statement"),
        pytest.param(b":20:X\n:25:DE89370400440532013000\n", "camt053", "file", id="mt940-declared-camt"),
    ],
)
def test_unreadable_files_are_refused_naming_why(data, format, field):
    with pytest.raises(StatementError) as caught:
        parse(data, format)
    assert caught.value.field == field


def _camt_with(old: bytes, new: bytes) -> bytes:
    data = fixture("camt053_v02_acme.xml")
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        pytest.param(
            b'<Amt Ccy="EUR">1450.00</Amt>\n        <CdtDbtInd>',
            b'<Amt Ccy="EUR">1450.001</Amt>\n        <CdtDbtInd>',
            "Stmt[1]/Ntry[1]/Amt",
            id="too-many-decimals",
        ),
        pytest.param(
            b'<Amt Ccy="EUR">300.00</Amt>',
            b'<Amt Ccy="XYZ">300.00</Amt>',
            "Stmt[1]/Ntry[2]/Amt/@Ccy",
            id="unknown-currency",
        ),
        pytest.param(
            b'<Amt Ccy="EUR">250.00</Amt>', b'<Amt Ccy="EUR">-250.00</Amt>', "Stmt[1]/Ntry[5]/Amt", id="signed-amount"
        ),
        pytest.param(b"<Id>ACME-2026-11-02</Id>", b"", "Stmt[1]/Id", id="no-statement-id"),
        pytest.param(b"<IBAN>DE89 3704 0044 0532 0130 00</IBAN>", b"", "Stmt[1]/Acct/Id", id="no-account"),
        pytest.param(
            b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>", b"<Sts>", "Stmt[1]/Ntry[1]/CdtDbtInd", id="no-indicator"
        ),
        pytest.param(
            b'<AmtDtls><TxAmt><Amt Ccy="EUR">400.00</Amt></TxAmt></AmtDtls>',
            b"",
            "Stmt[1]/Ntry[4]/NtryDtls/TxDtls[2]/AmtDtls/TxAmt/Amt",
            id="batch-transaction-without-amount",
        ),
        pytest.param(
            b"<BookgDt><Dt>2026-11-02</Dt>", b"<BookgDt><Dt>2026-13-02</Dt>", "Stmt[1]/Ntry[1]/BookgDt", id="bad-date"
        ),
    ],
)
def test_a_bad_camt_element_refuses_the_file_naming_it(old, new, field):
    with pytest.raises(StatementError) as caught:
        parse(_camt_with(old, new))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        pytest.param(b":25:DE89370400440532013000\r\n", b"", ":25: of statement 1 (line 1)", id="no-account"),
        pytest.param(
            b":60F:C261103EUR14815,50", b":60F:C261103XYZ14815,50", ":60F: of statement 1 (line 1)", id="currency"
        ),
        pytest.param(b"C99,95NTRF", b"C99,955NTRF", ":61: (line 9)", id="too-many-decimals"),
    ],
)
def test_a_bad_mt940_field_refuses_the_file_naming_it(old, new, field):
    data = fixture("mt940_acme.sta")
    assert old in data
    with pytest.raises(StatementError) as caught:
        parse(data.replace(old, new, 1))
    assert caught.value.field == field


def test_format_detection():
    assert detect(fixture("camt053_v08_acme.xml")) == "camt053"
    assert detect(b"\xef\xbb\xbf  " + fixture("camt053_v02_acme.xml")) == "camt053"
    assert detect(fixture("mt940_acme.sta")) == "mt940"


# --- the public samples (shared/reference-data), when this checkout has them ----------------------

reference = pytest.mark.skipif(REFERENCE is None, reason="shared/reference-data is not beside this checkout")


@reference
@pytest.mark.parametrize(
    ("name", "statements", "lines", "credits"),
    [
        pytest.param("camt/camt053.001.02_abnamro_oca.xml", 1, [4], [1], id="abnamro-v02-batch-reversal"),
        pytest.param("camt/camt053.001.02_op_fi_corporatejs.xml", 1, [2], [2], id="op-v02-scor"),
        pytest.param("camt/camt053.001.04_iso_business_sample_dvbern.xml", 1, [3], [2], id="iso-v04-othr-account"),
        pytest.param("camt/camt053.001.04_postfinance_dvbern.xml", 1, [32], [24], id="postfinance-v04-batches"),
        pytest.param("camt/camt053.001.08_lt_subite.xml", 2, [15, 0], [3, 0], id="lt-v08-two-statements"),
        pytest.param("mt940/rabobank-iban.sta", 2, [2, 2], [0, 0], id="rabobank"),
        pytest.param("mt940/abnamro.sta", 2, [8, 2], [0, 0], id="abnamro-mt940"),
        pytest.param("mt940/ing.sta", 1, [7], [2], id="ing"),
        pytest.param("mt940/sepa_snippet_de.sta", 2, [4, 7], [3, 2], id="german-sepa-retoure"),
    ],
)
def test_reference_samples_parse_with_the_counts_read_from_them(name, statements, lines, credits):
    parsed = parse((REFERENCE / name).read_bytes())
    assert len(parsed) == statements
    assert [len(s.lines) for s in parsed] == lines
    assert [len(s.credits) for s in parsed] == credits


@reference
def test_reference_samples_details():
    [abn] = parse((REFERENCE / "camt/camt053.001.02_abnamro_oca.xml").read_bytes())
    assert [ln.kind for ln in abn.lines] == ["debit", "reversal", "reversal", "credit"]  # the reversed DD is a batch
    credit = abn.credits[0]
    assert (credit.amount, credit.payer_name, credit.payer_account) == (
        D("1405.31"),
        "3rd party Media",
        "NL69ABNA0522123643",
    )
    [op] = parse((REFERENCE / "camt/camt053.001.02_op_fi_corporatejs.xml").read_bytes())
    assert op.credits[0].creditor_reference == "00000000803628206247"
    german = parse((REFERENCE / "mt940/sepa_snippet_de.sta").read_bytes())[0].credits[0]
    assert (german.payer_name, german.payer_account, german.remittance) == (
        "KARL KAUFMANN",
        "DE14508800500194785000",
        "Verw CTSc-01 BC-PPP TFNr 22 004",
    )
    retoure = [
        ln for ln in parse((REFERENCE / "mt940/sepa_snippet_de.sta").read_bytes())[1].lines if ln.kind == "reversal"
    ]
    assert len(retoure) == 4  # GVC 159 RETOURE (three credits, one debit): returned transfers, not money received
    with pytest.raises(StatementError):
        parse((REFERENCE / "camt/camt054.001.02_fi_rf_corporatejs.xml").read_bytes())  # a notification, not a statement


def _mt940_with(details: str, supplementary: str = "") -> bytes:
    return (
        ":20:T1\r\n:25:NL91ABNA0417164300\r\n:28C:1/1\r\n:60F:C261101EUR0,00\r\n"
        f":61:2611011101C25,00NTRFNONREF{supplementary}\r\n:86:{details}\r\n:62F:C261101EUR25,00\r\n-\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("details", "supplementary", "expected"),
    [
        pytest.param(
            "/EREF/E-77/ORDP//NAME/Contoso Ltd/IBAN/GB33BUKB20201555555555/REMI/USTD//INV-1 INV-2",
            "",
            ("INV-1 INV-2", None, "Contoso Ltd", "GB33BUKB20201555555555", "E-77"),
            id="dutch-tags-unstructured",
        ),
        pytest.param(
            "/EREF/NOTPROVIDED/ORDP//NAME/Fabrikam/REMI/STRD/CUR/RF18539007547034",
            "",
            (None, "RF18539007547034", "Fabrikam", None, None),
            id="dutch-tags-structured-rf",
        ),
        pytest.param(
            "/CNTP/NL02ABNA0123456789/ABNANL2A/Tailspin Toys/Utrecht/REMI/USTD//ACC-77",
            "",
            ("ACC-77", None, "Tailspin Toys", "NL02ABNA0123456789", None),
            id="dutch-counterparty",
        ),
        pytest.param(
            "166?00GUTSCHRIFT?20EREF+NOTPROVIDED?21SVWZ+RF18 5390 0754 7034 I?22NV-3?32Adventure Works",
            "",
            ("RF18 5390 0754 7034 INV-3", None, "Adventure Works", None, None),
            id="german-svwz-cut-mid-word",
        ),
        pytest.param(
            "PAYMENT INV-9 THANK YOU",
            "\r\nNL91ABNA0417164300",
            ("PAYMENT INV-9 THANK YOU", None, None, "NL91ABNA0417164300", None),
            id="free-text-iban-on-61-continuation",
        ),
    ],
)
def test_mt940_details_dialects(details, supplementary, expected):
    [line] = parse(_mt940_with(details, supplementary))[0].lines
    assert (line.remittance, line.creditor_reference, line.payer_name, line.payer_account, line.end_to_end_id) == (
        expected
    )
