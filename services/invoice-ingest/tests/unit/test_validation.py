"""Validation of invoices as accounting systems send them: amounts, currencies, locales, zones, dates."""

import pytest
from pydantic import ValidationError

from dunning.clock import utcnow
from dunning.events import envelope, validate
from dunning_ingest.invoice_input import error_list, invoice_adapter
from dunning_ingest.messages import invoice_issued
from dunning_tools.testing.invoices import customer_in, invoice_in

pytestmark = pytest.mark.unit

BASE = invoice_in()


def errors_of(**changes) -> dict[str, str]:
    body = {**BASE, **changes}
    try:
        invoice_adapter.validate_python(body)
    except ValidationError as exc:
        return {e["field"]: e["message"] for e in error_list(exc)}
    return {}


@pytest.mark.parametrize(
    "currency, amount, expected",
    [
        pytest.param("JPY", "1000", "1000", id="jpy-whole"),
        pytest.param("EUR", "1250", "1250.00", id="eur-no-decimals"),
        pytest.param("EUR", "1250.5", "1250.50", id="eur-one-decimal"),
        pytest.param("KWD", "10.125", "10.125", id="kwd-three-decimals"),
    ],
)
def test_amounts_within_the_currency_exponent_are_accepted(currency, amount, expected):
    inv = invoice_adapter.validate_python({**BASE, "currency": currency, "amount_due": amount})
    assert str(inv.amount_due) == expected


@pytest.mark.parametrize(
    "currency, amount, message",
    [
        pytest.param("JPY", "1000.5", "JPY allows 0 decimal places", id="jpy-decimals"),
        pytest.param("EUR", "12.345", "EUR allows 2 decimal places", id="eur-three-decimals"),
        pytest.param("EUR", "0", "greater than zero", id="zero"),
        pytest.param("EUR", "-5.00", "plain decimal string", id="negative"),
        pytest.param("EUR", "1e3", "plain decimal string", id="exponent"),
        pytest.param("EUR", "", "plain decimal string", id="empty"),
    ],
)
def test_amounts_are_refused_not_rounded(currency, amount, message):
    assert message in errors_of(currency=currency, amount_due=amount)["amount_due"]


@pytest.mark.parametrize("amount", [1250.0, 1250, 12.5, True, None], ids=["float", "int", "fraction", "bool", "null"])
def test_numbers_are_refused_with_a_clear_message(amount):
    assert "must be a decimal string" in errors_of(amount_due=amount)["amount_due"]


@pytest.mark.parametrize("currency", ["eur", "EURO", "XXX", "ABC", 978])
def test_unknown_currencies_are_refused(currency):
    assert "currency" in errors_of(currency=currency)


@pytest.mark.parametrize("locale", ["english", "en_GB", "xx-YY", "EN-gb", "", "en-GB-x"])
def test_bad_locales_are_refused(locale):
    assert "BCP 47" in errors_of(customer=customer_in(locale=locale))["customer.locale"]


@pytest.mark.parametrize("locale", ["en-GB", "de-DE", "ja-JP", "fr", "zh-Hans-CN", "pt-BR"])
def test_bcp47_locales_are_accepted(locale):
    assert errors_of(customer=customer_in(locale=locale)) == {}


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "Europe/Berlinn", "../../etc/passwd", "", "GMT+5 "])
def test_bad_timezones_are_refused(timezone):
    assert "IANA" in errors_of(customer=customer_in(timezone=timezone))["customer.timezone"]


@pytest.mark.parametrize("timezone", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Asia/Tokyo"])
def test_iana_timezones_are_accepted(timezone):
    assert errors_of(customer=customer_in(timezone=timezone)) == {}


def test_due_date_before_issue_date_is_refused():
    assert errors_of(issue_date="2026-11-02", due_date="2026-11-01") == {
        "due_date": "must be on or after issue_date (2026-11-02)"
    }
    assert errors_of(issue_date="2026-11-02", due_date="2026-11-02") == {}


@pytest.mark.parametrize("value", ["2026-02-30", "02/11/2026", 1700000000, "2026-11-02T00:00:00Z"])
def test_dates_must_be_real_yyyy_mm_dd(value):
    assert "issue_date" in errors_of(issue_date=value)


def test_every_bad_field_is_named():
    errors = errors_of(
        number="",
        customer=customer_in(email="nope"),
        payment_url="ftp://files.example.com/x",
        metadata={"k": 1},
        colour="blue",
    )
    assert set(errors) == {"number", "customer.email", "payment_url", "metadata.k", "colour"}


def test_metadata_is_limited_to_50_string_keys():
    assert errors_of(metadata={f"k{i}": "v" for i in range(50)}) == {}
    assert "metadata" in errors_of(metadata={f"k{i}": "v" for i in range(51)})
    assert [f for f in errors_of(metadata={"x" * 41: "v"})] == [f"metadata.{'x' * 41}.[key]"]
    assert "at most 500" in errors_of(metadata={"k": "v" * 501})["metadata.k"]


def test_same_content_has_the_same_hash_whatever_its_spelling():
    a = invoice_adapter.validate_python({**BASE, "amount_due": "1250"})
    b = invoice_adapter.validate_python({**BASE, "amount_due": "1250.00", "metadata": {}})
    c = invoice_adapter.validate_python({**BASE, "amount_due": "1250.01"})
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_invoice_issued_built_from_an_accepted_invoice_matches_its_schema():
    inv = invoice_adapter.validate_python(
        {**BASE, "currency": "JPY", "amount_due": "158000", "payment_url": None, "metadata": {"po": "1"}}
    )
    env = envelope(
        invoice_issued("ten_1", "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA", "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", inv, utcnow())
    )
    validate(env)
    assert env["data"]["amount_due"] == "158000"
    assert env["data"]["customer"]["locale"] == "en-GB"
