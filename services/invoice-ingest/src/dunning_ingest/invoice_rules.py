"""The field rules of an invoice an accounting system sends: one place for each check, used by both
twins in invoice_input (the pydantic model `InvoiceIn` and its hand-tuned mirror).

Input refuses rather than repairs: an amount is a decimal *string* with no more decimals than its
currency has (JPY "1000", EUR "1250.00"), dates are YYYY-MM-DD, the locale is BCP 47 and known to
CLDR (babel), the time zone is an IANA name (zoneinfo).
"""

import re
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from babel import Locale
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from dunning.money import MoneyError, parse_amount, validate_currency
from dunning.text import storable

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# http(s), a host (name, IPv4 or [IPv6]) with an optional port, then anything but whitespace.
URL = re.compile(
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[/?#]\S*)?$"
)
# The contract's shapes (schemas/events/InvoiceIssued.v1.schema.json), checked before the registries.
_LOCALE_SHAPE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_TZ_SHAPE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$")


def _error(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


@lru_cache(maxsize=4096)
def known_locale(value: str) -> bool:
    if not _LOCALE_SHAPE.fullmatch(value):
        return False
    try:
        Locale.parse(value, sep="-")
    except Exception:
        return False
    return True


@lru_cache(maxsize=4096)
def known_timezone(value: str) -> bool:
    if not _TZ_SHAPE.fullmatch(value):
        return False
    try:
        ZoneInfo(value)
    except Exception:
        return False
    return True


@lru_cache(maxsize=1024)
def currency_of(value: str) -> str | None:
    try:
        return validate_currency(value)
    except MoneyError:
        return None


def check_locale(value: str) -> str:
    if not known_locale(value):
        raise _error("locale", "must be a BCP 47 locale known to CLDR, such as en-GB or de-DE")
    return value


def check_timezone(value: str) -> str:
    if not known_timezone(value):
        raise _error("timezone", "must be an IANA time zone such as Europe/Berlin")
    return value


def check_currency(value: str) -> str:
    if currency_of(value) is None:
        try:
            validate_currency(value)
        except MoneyError as exc:
            raise _error("currency", str(exc)) from None
    return value


def check_email(value: str) -> str:
    if not EMAIL.fullmatch(value) or not storable(value):
        raise _error("email", "must be an email address such as ap@example.com")
    return value


def check_text(value: str) -> str:
    if not storable(value):
        raise _error("text", "must be text without NUL characters or unpaired surrogates")
    return value


def check_not_blank(value: str) -> str:
    if not value.strip():
        raise _error("blank", "must not be blank")
    return check_text(value)


def check_date_text(value: Any) -> Any:
    if not isinstance(value, str) or not DATE.fullmatch(value):
        raise _error("date_format", 'must be a date string such as "2026-11-30" (YYYY-MM-DD)')
    return value


def check_payment_url(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > 2048 or not URL.fullmatch(value) or not storable(value):
        raise _error("url", "must be an http or https URL of at most 2048 characters")
    return value


def check_amount(value: Any, info: ValidationInfo) -> Decimal:
    if not isinstance(value, str):
        raise _error(
            "amount_type", 'must be a decimal string such as "1250.00", not a JSON number (numbers lose precision)'
        )
    currency = info.data.get("currency")
    try:
        # Without a valid currency only the shape can be checked (the currency error is reported).
        return parse_amount(value, currency) if currency else parse_amount(value, "CLF")
    except MoneyError as exc:
        raise _error("amount", str(exc)) from None


def check_amount_text(value: Any) -> str:
    """An amount whose currency is not in the same body (a PATCH): its shape now, as text; the
    currency's decimals once the invoice is read (parse_amount)."""
    if not isinstance(value, str):
        raise _error(
            "amount_type", 'must be a decimal string such as "1250.00", not a JSON number (numbers lose precision)'
        )
    try:
        parse_amount(value, "KWD")  # the most decimals any currency has (3)
    except MoneyError as exc:
        raise _error("amount", str(exc)) from None
    return value


def check_due_date(value: date, info: ValidationInfo) -> date:
    issued = info.data.get("issue_date")
    if issued is not None and value < issued:
        raise _error("due_before_issue", f"must be on or after issue_date ({issued.isoformat()})")
    return value


Text = Annotated[str, Field(min_length=1), AfterValidator(check_not_blank)]
IsoDate = Annotated[date, BeforeValidator(check_date_text)]
_AMOUNT_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": r"^[0-9]+(\.[0-9]{1,3})?$",
        "examples": ["1250.00", "158000"],
        "description": "Decimal string in major units, with at most the currency's ISO 4217 decimals.",
    }
)
Amount = Annotated[Decimal, PlainValidator(check_amount), _AMOUNT_SCHEMA]
AmountText = Annotated[str, PlainValidator(check_amount_text), _AMOUNT_SCHEMA]
