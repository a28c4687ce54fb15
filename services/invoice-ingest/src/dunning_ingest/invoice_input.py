"""The invoice an accounting system sends, validated twice over: `InvoiceIn`, the pydantic model
(the rules, the error messages naming the field, the OpenAPI schema), and its hand-tuned mirror
`fast_validate_invoice_in`, which checks the common case, a well-formed invoice, with the very same
rules into plain slotted objects (`FastInvoiceIn`, ~4 us an invoice against ~11 us for the model;
the bulk path takes 10,000 a request).

The mirror may only be stricter than the model, never laxer: whatever it does not accept, for
whatever reason, goes through `InvoiceIn`, which then names every bad field (or accepts it: the
result is the same either way). So every error a caller sees comes from the model. The parity test
(tests/unit/test_invoice_input.py, property-based) holds the two equal.

Both check with the rules of invoice_rules, one invoice (POST /v1/invoices) and each item of a bulk
import alike.
"""

import hashlib
import re
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
)

from dunning.money import exponent, format_amount
from dunning.text import storable
from dunning_ingest.customer_rules import Attributes, Country, Phone, PostalAddress, Subdivision, Tags
from dunning_ingest.invoice_rules import (
    DATE,
    EMAIL,
    URL,
    Amount,
    AmountText,
    IsoDate,
    Text,
    check_currency,
    check_due_date,
    check_email,
    check_locale,
    check_payment_url,
    check_text,
    check_timezone,
    currency_of,
    known_locale,
    known_timezone,
)


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[Text, Field(max_length=200, description="The customer's id in the accounting system.")]
    name: Annotated[Text, Field(max_length=300)]
    email: Annotated[
        str, Field(max_length=254, json_schema_extra={"pattern": EMAIL.pattern}), AfterValidator(check_email)
    ]
    locale: Annotated[str, Field(max_length=35, examples=["en-GB"]), AfterValidator(check_locale)]
    timezone: Annotated[str, Field(max_length=64, examples=["Europe/Berlin"]), AfterValidator(check_timezone)]
    # Issue 10, optional: absent leaves the stored value as it is (customer_rules).
    country: Country = None
    subdivision: Subdivision = None
    tags: Tags = None
    attributes: Attributes = None
    # Later: the contact channels beyond e-mail (SMS and calls, letters); absent leaves the stored ones.
    phone: Phone = None
    postal_address: PostalAddress = None

    def canonical(self) -> dict[str, Any]:
        """The customer's part of an invoice's content hash: the fields given (an invoice without the
        optional ones hashes as it did before they existed)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class InvoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[
        Text,
        Field(max_length=200, description="The invoice's id in the accounting system; idempotency key for creation."),
    ]
    number: Annotated[Text, Field(max_length=100)]
    customer: CustomerIn
    currency: Annotated[str, Field(examples=["EUR"]), AfterValidator(check_currency)]  # before amount_due
    amount_due: Amount
    issue_date: IsoDate
    due_date: Annotated[IsoDate, AfterValidator(check_due_date)]
    payment_url: Annotated[
        str | None,
        Field(json_schema_extra={"pattern": URL.pattern, "maxLength": 2048}),
        AfterValidator(check_payment_url),
    ] = None
    metadata: "Metadata" = Field(default_factory=dict)

    def content_hash(self) -> bytes:
        """SHA-256 of the canonical content: equal for two requests that mean the same invoice."""
        canonical = {
            "external_id": self.external_id,
            "number": self.number,
            "customer": self.customer.canonical(),
            "currency": self.currency,
            "amount_due": format_amount(self.amount_due, self.currency),
            "issue_date": self.issue_date,
            "due_date": self.due_date,
            "payment_url": self.payment_url,
            "metadata": self.metadata,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


invoice_adapter: TypeAdapter[InvoiceIn] = TypeAdapter(InvoiceIn)


Metadata = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=40), AfterValidator(check_text)],
        Annotated[str, Field(max_length=500), AfterValidator(check_text)],
    ],
    Field(max_length=50, description="String to string, at most 50 keys."),
]


class InvoicePatch(BaseModel):
    """PATCH /v1/invoices/{id}: a JSON merge patch of the fields an accounting system may change. A
    field left out stays as it is; `payment_url: null` clears it, `metadata` replaces the map (null:
    empty). `currency` and `issue_date` never change: they are accepted only with their current value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    number: Annotated[Text, Field(max_length=100)] = None  # type: ignore[assignment]
    customer_external_id: Annotated[
        Text, Field(max_length=200, description="Move the invoice to this existing customer of the tenant.")
    ] = None  # type: ignore[assignment]
    currency: Annotated[str, Field(examples=["EUR"]), AfterValidator(check_currency)] = None  # type: ignore[assignment]
    amount_due: AmountText = None  # type: ignore[assignment]
    issue_date: IsoDate = None  # type: ignore[assignment]
    due_date: IsoDate = None  # type: ignore[assignment]
    payment_url: Annotated[
        str | None,
        AfterValidator(check_payment_url),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "pattern": URL.pattern,
                        "maxLength": 2048,
                        "examples": ["https://pay.example.com/i/INV-2026-00412"],
                    },
                    {"type": "null"},
                ],
                "description": "null clears it.",
            }
        ),
    ] = None
    metadata: Metadata | None = None


patch_adapter: TypeAdapter[InvoicePatch] = TypeAdapter(InvoicePatch)


class CloseIn(BaseModel):
    """The body of POST /v1/invoices/{id}/void and /write-off."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[Text, Field(max_length=500, description="Why; kept on the invoice and in its event.")]


close_adapter: TypeAdapter[CloseIn] = TypeAdapter(CloseIn)


def error_list(exc, prefix: str = "") -> list[dict[str, str]]:
    """A pydantic ValidationError as [{field, message}] with dotted paths (prefix.0.customer.locale)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        path = ".".join(str(p) for p in err["loc"])
        out.append(
            {"field": f"{prefix}.{path}" if prefix and path else (prefix or path or "(body)"), "message": err["msg"]}
        )
    return out


# --- the fast mirror of InvoiceIn ---------------------------------------------------------------------

_CUSTOMER_KEYS = frozenset(("external_id", "name", "email", "locale", "timezone"))
_INVOICE_KEYS = frozenset(
    ("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date", "payment_url", "metadata")
)
_REQUIRED = frozenset(("external_id", "number", "customer", "currency", "amount_due", "issue_date", "due_date"))
_EMPTY: dict[str, str] = {}
_AMOUNT = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,3}))?")
_TOO_LARGE = Decimal(10) ** 15


class FastCustomerIn:
    """An accepted customer: the attributes of CustomerIn, without pydantic. The fast path takes only
    customers without the optional segmentation fields (country, subdivision, tags, attributes): one
    with any of them goes through CustomerIn, so here they are always None."""

    __slots__ = ("external_id", "name", "email", "locale", "timezone")
    country = subdivision = tags = attributes = phone = postal_address = None  # never given on the fast path

    def __init__(self, external_id: str, name: str, email: str, locale: str, timezone: str):
        self.external_id, self.name, self.email, self.locale, self.timezone = external_id, name, email, locale, timezone


class FastInvoiceIn:
    """An accepted invoice: the attributes of InvoiceIn, without pydantic."""

    __slots__ = (
        "external_id",
        "number",
        "customer",
        "currency",
        "amount_due",
        "issue_date",
        "due_date",
        "payment_url",
        "metadata",
        "amount_text",
    )

    def __init__(
        self,
        external_id,
        number,
        customer,
        currency,
        amount_due,
        issue_date,
        due_date,
        payment_url,
        metadata,
        amount_text,
    ):
        self.external_id: str = external_id
        self.number: str = number
        self.customer: FastCustomerIn = customer
        self.currency: str = currency
        self.amount_due: Decimal = amount_due
        self.issue_date: date = issue_date
        self.due_date: date = due_date
        self.payment_url: str | None = payment_url
        self.metadata: dict[str, str] = metadata
        self.amount_text: str = amount_text  # format_amount(amount_due, currency)

    def content_hash(self) -> bytes:
        """The same bytes as InvoiceIn.content_hash for the same invoice."""
        c = self.customer
        canonical = {
            "external_id": self.external_id,
            "number": self.number,
            "customer": {
                "external_id": c.external_id,
                "name": c.name,
                "email": c.email,
                "locale": c.locale,
                "timezone": c.timezone,
            },
            "currency": self.currency,
            "amount_due": self.amount_text,
            "issue_date": self.issue_date,
            "due_date": self.due_date,
            "payment_url": self.payment_url,
            "metadata": self.metadata,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


def amount_text(inv: Any) -> str:
    """The canonical wire form of the amount, for a FastInvoiceIn or an InvoiceIn."""
    text = getattr(inv, "amount_text", None)
    return text if text is not None else format_amount(inv.amount_due, inv.currency)


def _text(value: Any, max_length: int) -> bool:
    """Text with a max_length: a non-blank str without NUL or lone surrogates."""
    return type(value) is str and 0 < len(value) <= max_length and not value.isspace() and storable(value)


@lru_cache(maxsize=4096)
def _date_of(value: str) -> date | None:
    if not DATE.fullmatch(value):
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


def _fast_customer(c: Any) -> FastCustomerIn | None:
    if type(c) is not dict or c.keys() != _CUSTOMER_KEYS:
        return None
    cext, name, email, locale, tz = c["external_id"], c["name"], c["email"], c["locale"], c["timezone"]
    if not (_text(cext, 200) and _text(name, 300)):
        return None
    if type(email) is not str or len(email) > 254 or not EMAIL.fullmatch(email) or not storable(email):
        return None
    if type(locale) is not str or len(locale) > 35 or not known_locale(locale):
        return None
    if type(tz) is not str or len(tz) > 64 or not known_timezone(tz):
        return None
    return FastCustomerIn(cext, name, email, locale, tz)


def fast_validate_invoice_in(obj: Any, customers: dict | None = None) -> FastInvoiceIn | None:
    """The invoice if it is valid by the checks of InvoiceIn; None if not (or not sure: then ask InvoiceIn).

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
            customer = customers[key] = _fast_customer(c)
    else:
        customer = _fast_customer(c)
    if customer is None:
        return None
    ext, number, currency = obj["external_id"], obj["number"], obj["currency"]
    if not (_text(ext, 200) and _text(number, 100)):
        return None
    if type(currency) is not str or currency_of(currency) is None:
        return None
    amount = _amount(obj["amount_due"], currency)
    if amount is None:
        return None
    issue_date, due_date = _date(obj["issue_date"]), _date(obj["due_date"])
    if issue_date is None or due_date is None or due_date < issue_date:
        return None
    url = obj.get("payment_url")
    if url is not None and (type(url) is not str or len(url) > 2048 or not URL.fullmatch(url) or not storable(url)):
        return None
    metadata = obj.get("metadata", _EMPTY)
    if metadata:
        if type(metadata) is not dict or len(metadata) > 50:
            return None
        for k, v in metadata.items():
            if not (
                type(k) is str and 0 < len(k) <= 40 and type(v) is str and len(v) <= 500 and storable(k) and storable(v)
            ):
                return None
    elif type(metadata) is not dict:
        return None
    else:
        metadata = {}
    return FastInvoiceIn(ext, number, customer, currency, amount[0], issue_date, due_date, url, metadata, amount[1])
