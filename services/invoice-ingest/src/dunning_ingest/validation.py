"""Fast validation of an invoice (a dict parsed from JSON), for the single POST and every bulk item.

The pydantic models in schemas.py define the rules and the error messages. Running them costs
~40 us an invoice, most of it for nested models, so the common case — a well-formed invoice —
is checked here by hand with the very same checks (schemas.check_*), into plain slotted objects.
Anything this path does not accept, for whatever reason, goes through the pydantic model, which
then names every bad field exactly as before (or accepts it: the result is the same either way).
So this path may only be stricter than the model, never laxer; tests/test_ingest_fastpath.py
holds the two to the same answers.
"""

import email.message
import hashlib
import json
import re
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from fastapi.exceptions import HTTPException, RequestValidationError
from pydantic import ValidationError

from dunning.money import exponent, format_amount

from dunning_ingest.schemas import (_DATE, _EMAIL, _URL, InvoiceIn, _currency, _known_locale, _known_timezone,
                                    invoice_adapter, storable)

_CUSTOMER_KEYS = frozenset(("external_id", "name", "email", "locale", "timezone"))
_INVOICE_KEYS = frozenset(("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date",
                           "payment_url", "metadata"))
_REQUIRED = frozenset(("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date"))
_EMPTY: dict[str, str] = {}
_AMOUNT = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,3}))?")
_TOO_LARGE = Decimal(10) ** 15


class Customer:
    __slots__ = ("external_id", "name", "email", "locale", "timezone")

    def __init__(self, external_id: str, name: str, email: str, locale: str, timezone: str):
        self.external_id, self.name, self.email, self.locale, self.timezone = external_id, name, email, locale, timezone


class Invoice:
    """An accepted invoice: the attributes of schemas.InvoiceIn, without pydantic."""

    __slots__ = ("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date",
                 "payment_url", "metadata", "amount_text")

    def __init__(self, external_id, number, customer, currency, amount_due, issue_date, due_date, payment_url,
                 metadata, amount_text):
        self.external_id: str = external_id
        self.number: str = number
        self.customer: Customer = customer
        self.currency: str = currency
        self.amount_due: Decimal = amount_due
        self.issue_date: date = issue_date
        self.due_date: date = due_date
        self.payment_url: str | None = payment_url
        self.metadata: dict[str, str] = metadata
        self.amount_text: str = amount_text  # format_amount(amount_due, currency)

    def content_hash(self) -> bytes:
        """The same bytes as InvoiceIn.content_hash for the same invoice (a test holds them equal)."""
        c = self.customer
        canonical = {
            "external_id": self.external_id, "number": self.number,
            "customer": {"external_id": c.external_id, "name": c.name, "email": c.email, "locale": c.locale,
                         "timezone": c.timezone},
            "currency": self.currency, "amount_due": self.amount_text, "issue_date": self.issue_date,
            "due_date": self.due_date, "payment_url": self.payment_url, "metadata": self.metadata,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


def amount_text(inv: Any) -> str:
    """The canonical wire form of the amount, for an Invoice or an InvoiceIn."""
    text = getattr(inv, "amount_text", None)
    return text if text is not None else format_amount(inv.amount_due, inv.currency)


def _text(value: Any, max_length: int) -> bool:
    """schemas.Text with a max_length: a non-blank str without NUL or lone surrogates."""
    return type(value) is str and 0 < len(value) <= max_length and not value.isspace() and storable(value)


@lru_cache(maxsize=4096)
def _date_of(value: str) -> date | None:
    if not _DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _date(value: Any) -> date | None:
    return _date_of(value) if type(value) is str else None


def _amount(value: Any, currency: str) -> tuple[Decimal, str] | None:
    """dunning.money.parse_amount's value and its format_amount text, for plain amounts such as "1250.5";
    None for anything else (parse_amount then decides, and names the problem)."""
    m = _AMOUNT.fullmatch(value) if type(value) is str else None
    if m is None:
        return None
    whole, fraction = m.groups()
    digits = exponent(currency)
    fraction = fraction or ""
    if len(fraction) > digits:
        return None
    text = f"{int(whole)}.{fraction.ljust(digits, '0')}" if digits else str(int(whole))
    amount = Decimal(text)
    if not amount or amount >= _TOO_LARGE:
        return None
    return amount, text


def _customer(c: Any) -> Customer | None:
    if type(c) is not dict or c.keys() != _CUSTOMER_KEYS:
        return None
    cext, name, email, locale, tz = c["external_id"], c["name"], c["email"], c["locale"], c["timezone"]
    if not (_text(cext, 200) and _text(name, 300)):
        return None
    if type(email) is not str or len(email) > 254 or not _EMAIL.fullmatch(email) or not storable(email):
        return None
    if type(locale) is not str or len(locale) > 35 or not _known_locale(locale):
        return None
    if type(tz) is not str or len(tz) > 64 or not _known_timezone(tz):
        return None
    return Customer(cext, name, email, locale, tz)


def fast_invoice(obj: Any, customers: dict | None = None) -> Invoice | None:
    """The invoice if it is valid by the checks of InvoiceIn; None if not (or not sure).

    `customers`: a cache (customer values -> Customer) for the items of one import, which repeat
    a few hundred customers over thousands of invoices."""
    if type(obj) is not dict or not _REQUIRED.issubset(obj.keys()) or not _INVOICE_KEYS.issuperset(obj.keys()):
        return None
    c = obj["customer"]
    customer = None
    if customers is not None and type(c) is dict and c.keys() == _CUSTOMER_KEYS:
        key = (c["external_id"], c["name"], c["email"], c["locale"], c["timezone"])
        try:
            customer = customers.get(key)
        except TypeError:  # a list or an object in there: not a customer
            return None
        if customer is None:
            customer = customers[key] = _customer(c)
    else:
        customer = _customer(c)
    if customer is None:
        return None
    ext, number, currency = obj["external_id"], obj["number"], obj["currency"]
    if not (_text(ext, 200) and _text(number, 100)):
        return None
    if type(currency) is not str or _currency(currency) is None:
        return None
    amount = _amount(obj["amount_due"], currency)
    if amount is None:
        return None
    issue_date, due_date = _date(obj["issue_date"]), _date(obj["due_date"])
    if issue_date is None or due_date is None or due_date < issue_date:
        return None
    url = obj.get("payment_url")
    if url is not None and (type(url) is not str or len(url) > 2048 or not _URL.fullmatch(url) or not storable(url)):
        return None
    metadata = obj.get("metadata", _EMPTY)
    if metadata:
        if type(metadata) is not dict or len(metadata) > 50:
            return None
        for k, v in metadata.items():
            if not (type(k) is str and 0 < len(k) <= 40 and type(v) is str and len(v) <= 500 and storable(k) and storable(v)):
                return None
    elif type(metadata) is not dict:
        return None
    else:
        metadata = {}
    return Invoice(ext, number, customer, currency, amount[0], issue_date, due_date, url, metadata, amount[1])


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: application/json or application/*+json (a missing type is not JSON: strict)."""
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def decode_invoice(raw: bytes, content_type: str | None) -> Invoice | InvoiceIn:
    """The request body of POST /v1/invoices as the invoice, or the RequestValidationError that FastAPI
    would raise for a body parameter of type InvoiceIn (the same errors, locations and problem)."""
    body: Any = raw
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if _is_json(content_type):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:  # what only the stdlib parser takes (lone surrogates, NaN...), or not JSON
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                               "msg": "JSON decode error", "input": {},
                                               "ctx": {"error": exc.msg}}]) from None
            except UnicodeDecodeError:
                raise HTTPException(400, "There was an error parsing the body") from None
    try:  # from_attributes: as FastAPI validates a body (the same error for a body that is not an object)
        return fast_invoice(body) or invoice_adapter.validate_python(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None
