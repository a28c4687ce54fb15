"""Reading an export: encodings, delimiters, BOMs, title rows above the header, JSON lines, and the
row number each record is reported under (the line it starts on, as a spreadsheet shows it)."""

import pytest

from dunning_cli.import_mapping import load_mapping, looks_like_header
from dunning_cli.import_source import Source, SourceError, flatten, unreadable

pytestmark = pytest.mark.unit


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("a,b\n1,x\n2,y\n", id="comma"),
        pytest.param("a;b\r\n1;x\r\n2;y\r\n", id="semicolon-crlf"),
        pytest.param("a\tb\n1\tx\n2\ty\n", id="tab"),
        pytest.param("\ufeffa|b\n1|x\n2|y\n", id="pipe-with-bom"),
    ],
)
def test_the_delimiter_is_sniffed_and_a_bom_is_not_part_of_the_first_column(tmp_path, content):
    source = Source(write(tmp_path, "in.csv", content), "csv")
    scan = source.scan()
    assert scan.header == ["a", "b"] and scan.rows == 2
    assert list(source.records()) == [(2, {"a": "1", "b": "x"}), (3, {"a": "2", "b": "y"})]


def test_rows_are_numbered_by_the_line_they_start_on_and_blank_lines_are_left_out(tmp_path):
    path = write(tmp_path, "in.csv", 'a,b\n1,"two\nlines"\n\n3,z\n')
    assert list(Source(path, "csv").records()) == [(2, {"a": "1", "b": "two\nlines"}), (5, {"a": "3", "b": "z"})]


def test_another_encoding_is_given_and_a_wrong_one_is_a_usage_error(tmp_path):
    path = write(tmp_path, "in.csv", "name,amount\nSöhne,1\n".encode("cp1252"))
    with pytest.raises(SourceError, match="not utf-8 text.*--encoding"):
        Source(path, "csv").scan()
    assert list(Source(path, "csv", encoding="cp1252").records()) == [(2, {"name": "Söhne", "amount": "1"})]
    with pytest.raises(SourceError, match="unknown encoding"):
        Source(path, "csv", encoding="klingon").scan()


def test_a_header_below_report_titles_is_found_by_row_number_or_by_its_columns(tmp_path):
    path = write(
        tmp_path,
        "qbo.csv",
        '"Invoice List"\n"Acme Ltd"\n"All Dates"\n\n'
        ",Date,No.,Customer full name,Email,Due Date,Amount,Open Balance\n"
        ',11/02/2026,1001,Brandt,ap@brandt.de,11/16/2026,"1,250.00","1,250.00"\n'
        'TOTAL,,,,,,"$1,250.00","$1,250.00"\n',
    )
    by_number = Source(path, "csv", header_row=5)
    assert by_number.scan().header[1:3] == ["Date", "No."]
    qbo = load_mapping("quickbooks-online")
    auto = Source(path, "csv", header_row=None, is_header=lambda names: looks_like_header(qbo, names))
    scan = auto.scan()
    assert scan.header == by_number.scan().header and scan.rows == 2
    assert [line for line, _ in auto.records()] == [6, 7]


def test_no_header_is_a_usage_error(tmp_path):
    with pytest.raises(SourceError, match="no header row"):
        Source(write(tmp_path, "empty.csv", ""), "csv").scan()


def test_json_lines_in_the_apis_shape_are_flattened_and_numbers_stay_exact(tmp_path):
    path = write(
        tmp_path,
        "in.jsonl",
        '{"external_id": "in_1", "customer": {"email": "ap@acme.de"}, "metadata": {"po": "1"}, "amount_due": 1250.10}\n'
        "\n"
        "[1, 2]\n"
        "{nope\n",
    )
    source = Source(path, Source.format_of(path, None))
    assert source.format == "jsonl"
    records = list(source.records())
    assert records[0][0] == 1
    assert records[0][1] == {
        "external_id": "in_1",
        "customer_email": "ap@acme.de",
        "metadata.po": "1",
        "amount_due": records[0][1]["amount_due"],
    }
    assert str(records[0][1]["amount_due"]) == "1250.10"
    assert [(line, unreadable(r)) for line, r in records[1:]] == [
        (3, "not a JSON object"),
        (4, records[2][1]["\x00line"]),
    ]
    assert unreadable(records[2][1]).startswith("not JSON")
    assert source.scan().header == ["external_id", "customer_email", "metadata.po", "amount_due"]


def test_flatten_leaves_other_keys_alone():
    assert flatten({"a": {"b": 1}, "customer": "x"}) == {"a": {"b": 1}, "customer": "x"}
