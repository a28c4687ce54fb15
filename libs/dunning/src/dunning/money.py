"""Money: Decimal amounts with an ISO 4217 currency, never float.

The exponent (number of minor-unit digits) comes from ISO 4217: most currencies have 2, JPY and KRW
have none, BHD, KWD and friends have 3. An amount with more decimals than its currency allows is
refused, not rounded: a finance system must never change an amount it was given.
"""

import re
from decimal import Decimal, InvalidOperation

from babel.numbers import is_currency

# ISO 4217 minor units that differ from 2.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}
# Codes that babel knows as historical or that are not money.
# CLF and UYW (4 decimals) are units of account, not currencies an invoice is paid in.
_NOT_TRADED = {"CLF", "UYW", "XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA"}


_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_TOO_LARGE = Decimal(10) ** 15


class MoneyError(ValueError):
    """A caller-fixable problem with an amount or a currency."""


def validate_currency(code: str) -> str:
    if not isinstance(code, str) or len(code) != 3 or not code.isalpha() or not code.isupper():
        raise MoneyError("must be an upper-case ISO 4217 code such as EUR")
    if code in _NOT_TRADED or not is_currency(code):
        raise MoneyError(f"{code} is not an ISO 4217 currency")
    return code


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency, 2)


def parse_amount(value: str, currency: str, *, allow_zero: bool = False) -> Decimal:
    """Parse a decimal string amount; refuse floats, signs, exponents and excess precision."""
    if not isinstance(value, str):
        raise MoneyError('must be a decimal string such as "1250.00", not a number')
    text = value.strip()
    if not _PLAIN.fullmatch(text):
        raise MoneyError('must be a plain decimal string such as "1250.00"')
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - guarded above
        raise MoneyError("not a decimal number") from exc
    places = -int(amount.as_tuple().exponent) if "." in text else 0  # finite: _PLAIN has no NaN/Inf
    digits = exponent(currency)
    if places > digits:
        raise MoneyError(f"{currency} allows {digits} decimal place{'s' if digits != 1 else ''}, got {places}")
    if amount == 0 and not allow_zero:
        raise MoneyError("must be greater than zero")
    if amount >= _TOO_LARGE:
        raise MoneyError("is too large")
    return quantize(amount, currency)


def quantize(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-exponent(currency)))


def to_minor(amount: Decimal, currency: str) -> int:
    return int(quantize(amount, currency).scaleb(exponent(currency)))


def from_minor(minor: int, currency: str, *, digits: int | None = None) -> Decimal:
    """Minor units to an amount; `digits` when the sender counts minor units its own way (Stripe's
    ISK has 2). Refuses a value that the currency's ISO exponent cannot hold exactly."""
    amount = Decimal(minor).scaleb(-(exponent(currency) if digits is None else digits))
    exact = quantize(amount, currency)
    if exact != amount:
        raise MoneyError(f"{minor} minor units of {currency} is not a whole amount of {currency}")
    return exact


def format_amount(amount: Decimal, currency: str) -> str:
    """The canonical wire form: a decimal string with exactly the currency's exponent."""
    return str(quantize(amount, currency))
