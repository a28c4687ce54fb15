from decimal import Decimal

import pytest

from dunning.money import MoneyError, format_amount, from_minor, parse_amount, to_minor, validate_currency

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value,currency,expected",
    [
        pytest.param("1250", "EUR", Decimal("1250.00"), id="eur-integer"),
        pytest.param("1250.5", "EUR", Decimal("1250.50"), id="eur-one-decimal"),
        pytest.param("5000", "JPY", Decimal("5000"), id="jpy-no-decimals"),
        pytest.param("12.345", "KWD", Decimal("12.345"), id="kwd-three-decimals"),
        pytest.param(" 10.00 ", "USD", Decimal("10.00"), id="surrounding-space"),
    ],
)
def test_parse_amount_accepts(value, currency, expected):
    assert parse_amount(value, currency) == expected
    assert str(parse_amount(value, currency)) == str(expected)


@pytest.mark.parametrize(
    "value,currency,message",
    [
        pytest.param("1000.5", "JPY", "JPY allows 0 decimal places", id="jpy-decimal"),
        pytest.param("1.001", "EUR", "EUR allows 2 decimal places", id="eur-three-decimals"),
        pytest.param(12.5, "EUR", "not a number", id="float"),
        pytest.param(12, "EUR", "not a number", id="int"),
        pytest.param("-5.00", "EUR", "plain decimal", id="negative"),
        pytest.param("1e3", "EUR", "plain decimal", id="exponent"),
        pytest.param("1,000.00", "EUR", "plain decimal", id="thousands-separator"),
        pytest.param("0", "EUR", "greater than zero", id="zero"),
        pytest.param("", "EUR", "plain decimal", id="empty"),
        pytest.param("NaN", "EUR", "plain decimal", id="nan"),
        pytest.param("1000000000000000", "EUR", "too large", id="too-large"),
    ],
)
def test_parse_amount_refuses_with_a_reason(value, currency, message):
    with pytest.raises(MoneyError, match=message):
        parse_amount(value, currency)


@pytest.mark.parametrize(
    "code,ok",
    [
        pytest.param("EUR", True, id="eur"),
        pytest.param("JPY", True, id="jpy"),
        pytest.param("eur", False, id="lower-case"),
        pytest.param("EURO", False, id="four-letters"),
        pytest.param("ABC", False, id="unknown"),
        pytest.param("XXX", False, id="no-currency-code"),
    ],
)
def test_validate_currency(code, ok):
    if ok:
        assert validate_currency(code) == code
    else:
        with pytest.raises(MoneyError):
            validate_currency(code)


def test_minor_units_round_trip_by_currency_exponent():
    assert to_minor(Decimal("12.34"), "USD") == 1234
    assert to_minor(Decimal("5000"), "JPY") == 5000
    assert to_minor(Decimal("1.234"), "BHD") == 1234
    assert from_minor(1234, "USD") == Decimal("12.34")
    assert from_minor(5000, "JPY") == Decimal("5000")
    assert format_amount(Decimal("7"), "EUR") == "7.00"
