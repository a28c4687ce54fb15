"""The mapping of an export's columns to invoices: what a bad mapping says before anything is sent,
and how one row becomes an invoice (or the errors that keep it back, named by the input's column)."""

import pytest

from dunning_cli.import_mapping import (
    FIELDS,
    Mapping,
    MappingError,
    load_mapping,
    looks_like_header,
    parse_mapping,
    resolve,
    shipped_mappings,
)
from dunning_cli.import_values import normalize_amount, parse_date

pytestmark = pytest.mark.unit

OWN_HEADER = [*FIELDS, "metadata.po"]
ROW = {
    "external_id": "in_1",
    "number": "INV-1",
    "customer_external_id": "c1",
    "customer_name": "Acme",
    "customer_email": "ap@acme.de",
    "customer_locale": "en-GB",
    "customer_timezone": "Europe/London",
    "currency": "eur",
    "amount_due": "1,250.00",
    "issue_date": "2026-11-02",
    "due_date": "2026-11-16",
    "payment_url": "",
    "metadata.po": "PO-1",
}


def test_headers_named_like_our_fields_need_no_mapping():
    row = resolve(Mapping(), OWN_HEADER).convert(ROW)
    assert row.errors == []
    assert row.invoice == {
        "external_id": "in_1",
        "number": "INV-1",
        "customer": {
            "external_id": "c1",
            "name": "Acme",
            "email": "ap@acme.de",
            "locale": "en-GB",
            "timezone": "Europe/London",
        },
        "currency": "EUR",
        "amount_due": "1250.00",
        "issue_date": "2026-11-02",
        "due_date": "2026-11-16",
        "metadata": {"po": "PO-1"},
    }


XERO_LIKE = {
    "columns": {
        "InvoiceNumber": ["external_id", "number"],
        "ContactName": ["customer_external_id", "customer_name"],
        "EmailAddress": "customer_email",
        "InvoiceDate": "issue_date",
        "DueDate": "due_date",
        "Amount": "amount_due",
        "PO": "metadata.po",
    },
    "defaults": {"customer_locale": "de-DE", "customer_timezone": "Europe/Berlin", "currency": "EUR"},
    "date_format": "%d.%m.%Y",
    "decimal_comma": True,
}


def test_a_mapping_renames_columns_fills_defaults_and_reads_the_exports_formats():
    plan = resolve(
        parse_mapping(XERO_LIKE),
        ["*InvoiceNumber", "contactname", "EmailAddress", "InvoiceDate", "DueDate", "Amount", "PO", "Unrelated"],
    )
    record = {
        "*InvoiceNumber": "R-7",
        "contactname": "Brandt GmbH",
        "EmailAddress": "ap@brandt.de",
        "InvoiceDate": "02.11.2026",
        "DueDate": "16.11.2026",
        "Amount": "1.250,50 €",
        "PO": "",
        "Unrelated": "x",
    }
    row = plan.convert(record)
    assert row.errors == []
    assert row.invoice is not None
    assert (row.invoice["external_id"], row.invoice["number"]) == ("R-7", "R-7")
    assert row.invoice["customer"] == {
        "external_id": "Brandt GmbH",
        "name": "Brandt GmbH",
        "email": "ap@brandt.de",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
    }
    assert (row.invoice["issue_date"], row.invoice["due_date"], row.invoice["amount_due"]) == (
        "2026-11-02",
        "2026-11-16",
        "1250.50",
    )
    assert "metadata" not in row.invoice  # an empty optional column is left out
    assert plan.column_of("customer_email") == "EmailAddress"
    assert plan.column_of("currency") == "(default currency)"


def test_a_row_the_cli_cannot_read_names_the_input_columns_and_sends_nothing():
    plan = resolve(parse_mapping(XERO_LIKE), list(XERO_LIKE["columns"]))
    record = {
        "InvoiceNumber": "R-8",
        "ContactName": "",
        "EmailAddress": "ap@x.de",
        "InvoiceDate": "2026-13-45",
        "DueDate": "16/11/2026",
        "Amount": "12x",
        "PO": "",
    }
    row = plan.convert(record)
    assert row.invoice is None and row.external_id == "R-8"
    found = {(e.column, e.code) for e in row.errors}
    assert found == {
        ("ContactName", "missing"),
        ("InvoiceDate", "date_format"),
        ("DueDate", "date_format"),
        ("Amount", "amount_format"),
    }


@pytest.mark.parametrize(
    "doc, message",
    [
        pytest.param(
            {"columns": {"Invoice No": "numbr"}},
            "column 'Invoice No' maps to unknown field 'numbr'",
            id="unknown-target",
        ),
        pytest.param(
            {"columns": {"Invoice No": ["number", 7]}}, "'Invoice No' must map to a field name", id="target-not-text"
        ),
        pytest.param({"defaults": {"locale": "en-GB"}}, "default for unknown field 'locale'", id="unknown-default"),
        pytest.param({"colums": {}}, "unknown key 'colums'", id="unknown-key"),
        pytest.param({"date_format": "%d/%m"}, "date_format '%d/%m' is not a strptime format", id="date-no-year"),
        pytest.param({"header_row": 0}, "header_row must be a row number", id="header-row-zero"),
        pytest.param({"decimal_comma": "yes"}, "decimal_comma must be true or false", id="flag-not-bool"),
        pytest.param({"delimiter": ";;"}, "delimiter must be one character", id="delimiter"),
        pytest.param(["columns"], "must be a map", id="not-a-map"),
    ],
)
def test_a_bad_mapping_document_is_refused_naming_what_is_wrong(doc, message):
    with pytest.raises(MappingError, match=message.replace("(", r"\(").replace("%", "%")):
        parse_mapping(doc)


@pytest.mark.parametrize(
    "doc, header, message",
    [
        pytest.param(
            {"columns": {"Due": "due_date"}},
            [f for f in OWN_HEADER if f != "due_date"],
            "column 'Due' \\(for due_date\\) is not in the file's header",
            id="mapped-column-absent",
        ),
        pytest.param(
            {},
            [f for f in OWN_HEADER if f != "customer_email"],
            "no column for required field customer_email",
            id="required-field-absent",
        ),
        pytest.param({"skip_if": {"Status": ["Paid"]}}, OWN_HEADER, "skip_if names column 'Status'", id="skip-column"),
    ],
)
def test_a_mapping_that_does_not_fit_the_header_fails_before_anything_is_sent(doc, header, message):
    with pytest.raises(MappingError, match=message):
        resolve(parse_mapping(doc), header)


def test_a_default_stands_in_for_a_missing_column_and_for_an_empty_cell():
    header = [f for f in OWN_HEADER if f != "customer_locale"]
    plan = resolve(
        parse_mapping({"defaults": {"customer_locale": "fr-FR", "customer_timezone": "Europe/Paris"}}), header
    )
    row = plan.convert({**ROW, "customer_timezone": ""})
    assert row.invoice is not None
    assert row.invoice["customer"]["locale"] == "fr-FR" and row.invoice["customer"]["timezone"] == "Europe/Paris"


def test_skip_if_takes_a_column_or_a_field():
    plan = resolve(parse_mapping({"skip_if": {"external_id": [""], "currency": ["GBP"]}}), OWN_HEADER)
    assert plan.skipped({**ROW, "external_id": " "})
    assert plan.skipped({**ROW, "currency": "GBP"})
    assert not plan.skipped(ROW)


@pytest.mark.parametrize(
    "text, decimal_comma, expected",
    [
        pytest.param("1250.00", False, "1250.00", id="plain"),
        pytest.param("1,250.00", False, "1250.00", id="thousands-comma"),
        pytest.param("$1,250,000.5", False, "1250000.5", id="symbol-and-groups"),
        pytest.param("EUR 1250.00", False, "1250.00", id="code-before"),
        pytest.param("1250.00 EUR", False, "1250.00", id="code-after"),
        pytest.param("1.250,00", True, "1250.00", id="decimal-comma"),
        pytest.param("1 250,00 €", True, "1250.00", id="space-groups"),
        pytest.param("1'250.00", False, "1250.00", id="swiss-groups"),
        pytest.param("-12.00", False, "-12.00", id="negative-is-the-servers-to-refuse"),
    ],
)
def test_amounts_are_read_in_the_exports_notation(text, decimal_comma, expected):
    assert normalize_amount(text, decimal_comma) == expected


@pytest.mark.parametrize(
    "text, decimal_comma",
    [
        pytest.param("1.250,00", False, id="comma-decimal-read-as-point-is-refused-not-1.25"),
        pytest.param("1,25", False, id="comma-not-a-thousands-group"),
        pytest.param("1,250.00", True, id="point-decimal-read-as-comma"),
        pytest.param("12x", False, id="letters"),
        pytest.param("", False, id="empty"),
    ],
)
def test_an_ambiguous_amount_is_refused_never_guessed(text, decimal_comma):
    with pytest.raises(ValueError, match="is not an amount"):
        normalize_amount(text, decimal_comma)


def test_extra_zeros_beyond_the_currency_are_dropped_but_nothing_is_rounded():
    plan = resolve(Mapping(), OWN_HEADER)

    def amount(**changes: str) -> str:
        invoice = plan.convert({**ROW, **changes}).invoice
        assert invoice is not None
        return invoice["amount_due"]

    assert amount(amount_due="1250.0000") == "1250.00"
    assert amount(amount_due="1250.005") == "1250.005"  # the server refuses it, by its own rule
    assert amount(currency="JPY", amount_due="1000.00") == "1000"


@pytest.mark.parametrize(
    "text, fmt, expected",
    [
        pytest.param("2026-11-02", None, "2026-11-02", id="iso"),
        pytest.param("2026-11-02T00:00:00Z", None, "2026-11-02", id="iso-instant"),
        pytest.param("02/11/2026", "%d/%m/%Y", "2026-11-02", id="uk"),
        pytest.param("11/02/2026", "%m/%d/%Y", "2026-11-02", id="us"),
        pytest.param("2026-11-02", "%d/%m/%Y", "2026-11-02", id="iso-whatever-the-format"),
    ],
)
def test_dates_in_the_mappings_format_become_iso(text, fmt, expected):
    assert parse_date(text, fmt) == expected


def test_a_date_not_in_the_format_is_refused():
    with pytest.raises(ValueError, match="not a date in the format %d/%m/%Y"):
        parse_date("11/30/2026", "%d/%m/%Y")


def test_header_auto_finds_the_row_with_the_mapped_columns():
    qbo = load_mapping("quickbooks-online")
    assert qbo.header_row is None
    assert not looks_like_header(qbo, ["Invoice List"])
    assert looks_like_header(
        qbo, ["", "Date", "No.", "Customer full name", "Email", "Due Date", "Amount", "Open Balance"]
    )


def test_the_shipped_mappings_load_by_name():
    assert shipped_mappings() == ["quickbooks-online", "xero"]
    xero = load_mapping("xero")
    assert xero.line_items and xero.date_format == "%d/%m/%Y"
    assert xero.columns["InvoiceNumber"] == ("external_id", "number")


def test_a_mapping_file_that_is_not_yaml_is_a_usage_error(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("columns: [unclosed")
    with pytest.raises(MappingError, match="cannot read it"):
        load_mapping(bad)
