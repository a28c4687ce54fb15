"""The values of an export's cells in our notation: dates to ISO (from the mapping's strptime
format), amounts to plain decimal strings (from "€1,250.00", "1.250,00 EUR", "1 250,00"). What is
ambiguous is refused, never guessed: "1.250,00" read with a decimal point is an error, not 1.25.
"""

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from dunning.money import exponent


def parse_date(text: str, fmt: str | None) -> str:
    """An ISO date (YYYY-MM-DD) from the export's format; ISO input is always accepted."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?", text):
        try:
            return date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
    if fmt is not None:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a date in the format {fmt or 'YYYY-MM-DD'}")


def normalize_amount(text: str, decimal_comma: bool) -> str:
    """A plain decimal string ("1250.00") from an export's amount ("€1,250.00", "1.250,00 EUR",
    "1 250,00"). Thousands separators must sit where thousands are: "1.250,00" read with a decimal
    point is refused, never taken for 1.25."""
    cleaned = re.sub(r"[\s\u00a0\u202f']", "", text)
    group, point = (r"\.", ",") if decimal_comma else (",", r"\.")
    symbol = r"(?:[A-Z]{3}|[^\w.,+-]{1,3})?"  # EUR, €, US$ (not a letter: "12x" is no amount)
    match = re.fullmatch(
        rf"(?P<sign1>-)?{symbol}(?P<sign2>-)?(?P<whole>\d{{1,3}}(?:{group}\d{{3}})+|\d+)(?:{point}(?P<frac>\d+))?{symbol}",
        cleaned,
    )
    if match is None:
        separator = "a decimal comma" if decimal_comma else "a decimal point"
        raise ValueError(f"{text!r} is not an amount (expected digits with {separator})")
    number = re.sub(r"\D", "", match["whole"]) + (f".{match['frac']}" if match["frac"] else "")
    return ("-" if match["sign1"] or match["sign2"] else "") + number


def drop_extra_zeros(amount: str, currency: str) -> str:
    """Trailing zeros beyond the currency's decimals dropped ("1250.0000" EUR: "1250.00"); an amount
    that would change is left as it is, for the server to refuse by its own rule."""
    try:
        value, digits = Decimal(amount), exponent(currency)
        if -int(value.as_tuple().exponent) <= digits:
            return amount
        exact = value.quantize(Decimal(1).scaleb(-digits))
    except InvalidOperation:
        return amount
    return str(exact) if exact == value else amount
