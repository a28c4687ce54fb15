"""The CLI sends a multi-statement file one statement per request: each part a file of its own."""

import pytest

from dunning_cli.statements import split
from dunning_reconciliation.statements import parse

pytestmark = pytest.mark.unit

MT940 = (
    b"ABNANL2A\r\n940\r\n"
    b":20:ONE\r\n:25:NL91ABNA0417164300\r\n:28C:1/1\r\n:60F:C261101EUR100,00\r\n"
    b":61:2611011101C10,00NTRFNONREF\r\n:86:INV-1\r\n:62F:C261101EUR110,00\r\n-\r\n"
    b":20:TWO\r\n:25:NL91ABNA0417164300\r\n:28C:2/1\r\n:60F:C261102EUR110,00\r\n"
    b":61:2611021102C5,00NTRFNONREF\r\n:86:INV-2\r\n:62F:C261102EUR115,00\r\n-\r\n"
)


def camt(statements: int, prefix: str = "") -> bytes:
    p = f"{prefix}:" if prefix else ""
    ns = f' xmlns{":" + prefix if prefix else ""}="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"'
    body = "".join(
        f"<{p}Stmt><{p}Id>S{i}</{p}Id><{p}StmtPgntn><{p}PgNb>1</{p}PgNb></{p}StmtPgntn>"
        f"<{p}Acct><{p}Id><{p}IBAN>DE89370400440532013000</{p}IBAN></{p}Id><{p}Ccy>EUR</{p}Ccy></{p}Acct>"
        f'<{p}Ntry><{p}Amt Ccy="EUR">{i}.00</{p}Amt><{p}CdtDbtInd>CRDT</{p}CdtDbtInd></{p}Ntry></{p}Stmt>'
        for i in range(1, statements + 1)
    )
    return (
        f'<?xml version="1.0"?><{p}Document{ns}><{p}BkToCstmrStmt><{p}GrpHdr><{p}MsgId>M</{p}MsgId></{p}GrpHdr>'
        f"{body}</{p}BkToCstmrStmt></{p}Document>"
    ).encode()


def test_mt940_is_split_at_each_statement():
    kind, parts = split(MT940, None)
    assert kind == "mt940" and len(parts) == 2
    assert [parse(p)[0].statement_ref.split("/")[0] for p in parts] == ["ONE", "TWO"]
    assert [parse(p)[0].lines[0].amount for p in parts] == [10, 5]


@pytest.mark.parametrize("prefix", ["", "c53"], ids=["default-namespace", "prefixed"])
def test_camt_is_split_into_documents_of_one_statement(prefix):
    kind, parts = split(camt(3, prefix), None)
    assert kind == "camt053" and len(parts) == 3
    assert [[s.statement_ref for s in parse(p)] for p in parts] == [["S1"], ["S2"], ["S3"]]


def test_a_single_statement_file_is_sent_as_it_is():
    data = camt(1)
    assert split(data, None) == ("camt053", [data])
    assert split(MT940[: MT940.index(b":20:TWO")], "mt940")[1] == [MT940[: MT940.index(b":20:TWO")]]
