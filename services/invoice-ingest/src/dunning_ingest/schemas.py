"""API models: what an accounting system sends, checked field by field, and what it gets back.

Input models refuse rather than repair: an amount is a decimal *string* with no more decimals than
its currency has (JPY "1000", EUR "1250.00"), dates are YYYY-MM-DD, the locale is BCP 47 and known
to CLDR (babel), the time zone is an IANA name (zoneinfo). Errors name the field and say what is
expected. The same model validates one invoice (POST /v1/invoices) and each item of a bulk import.
"""

import hashlib
import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from babel import Locale
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationInfo
from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from dunning.http import FieldError, Page
from dunning.money import MoneyError, format_amount, parse_amount, validate_currency

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# http(s), a host (name, IPv4 or [IPv6]) with an optional port, then anything but whitespace.
_URL = re.compile(r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                  r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[/?#]\S*)?$")
# The contract's shapes (schemas/events/InvoiceIssued.v1.schema.json), checked before the registries.
_LOCALE_SHAPE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_TZ_SHAPE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$")


def _error(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


@lru_cache(maxsize=4096)
def _known_locale(value: str) -> bool:
    if not _LOCALE_SHAPE.fullmatch(value):
        return False
    try:
        Locale.parse(value, sep="-")
    except Exception:  # noqa: BLE001 - ValueError, or babel's UnknownLocaleError
        return False
    return True


@lru_cache(maxsize=4096)
def _known_timezone(value: str) -> bool:
    if not _TZ_SHAPE.fullmatch(value):
        return False
    try:
        ZoneInfo(value)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, IsADirectoryError ...
        return False
    return True


@lru_cache(maxsize=1024)
def _currency(value: str) -> str | None:
    try:
        return validate_currency(value)
    except MoneyError:
        return None


def check_locale(value: str) -> str:
    if not _known_locale(value):
        raise _error("locale", "must be a BCP 47 locale known to CLDR, such as en-GB or de-DE")
    return value


def check_timezone(value: str) -> str:
    if not _known_timezone(value):
        raise _error("timezone", "must be an IANA time zone such as Europe/Berlin")
    return value


def check_currency(value: str) -> str:
    if _currency(value) is None:
        try:
            validate_currency(value)
        except MoneyError as exc:
            raise _error("currency", str(exc)) from None
    return value


def check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or not storable(value):
        raise _error("email", "must be an email address such as ap@example.com")
    return value


def storable(value: str) -> bool:
    """PostgreSQL text takes neither NUL characters nor lone surrogates (JSON can carry both)."""
    if "\x00" in value:
        return False
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


def check_text(value: str) -> str:
    if not storable(value):
        raise _error("text", "must be text without NUL characters or unpaired surrogates")
    return value


def check_not_blank(value: str) -> str:
    if not value.strip():
        raise _error("blank", "must not be blank")
    return check_text(value)


def check_date_text(value: Any) -> Any:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _error("date_format", "must be a date string such as \"2026-11-30\" (YYYY-MM-DD)")
    return value


def check_payment_url(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > 2048 or not _URL.fullmatch(value) or not storable(value):
        raise _error("url", "must be an http or https URL of at most 2048 characters")
    return value


def check_amount(value: Any, info: ValidationInfo) -> Decimal:
    if not isinstance(value, str):
        raise _error("amount_type", "must be a decimal string such as \"1250.00\", not a JSON number "
                     "(numbers lose precision)")
    currency = info.data.get("currency")
    try:
        # Without a valid currency only the shape can be checked (the currency error is reported).
        return parse_amount(value, currency) if currency else parse_amount(value, "CLF")
    except MoneyError as exc:
        raise _error("amount", str(exc)) from None


def check_due_date(value: date, info: ValidationInfo) -> date:
    issued = info.data.get("issue_date")
    if issued is not None and value < issued:
        raise _error("due_before_issue", f"must be on or after issue_date ({issued.isoformat()})")
    return value


Text = Annotated[str, Field(min_length=1), AfterValidator(check_not_blank)]
IsoDate = Annotated[date, BeforeValidator(check_date_text)]
Amount = Annotated[
    Decimal, PlainValidator(check_amount),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,3})?$", "examples": ["1250.00", "158000"],
                    "description": "Decimal string in major units, with at most the currency's ISO 4217 decimals."}),
]


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[Text, Field(max_length=200, description="The customer's id in the accounting system.")]
    name: Annotated[Text, Field(max_length=300)]
    email: Annotated[str, Field(max_length=254), AfterValidator(check_email)]
    locale: Annotated[str, Field(max_length=35, examples=["en-GB"]), AfterValidator(check_locale)]
    timezone: Annotated[str, Field(max_length=64, examples=["Europe/Berlin"]), AfterValidator(check_timezone)]


class InvoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[Text, Field(max_length=200, description="The invoice's id in the accounting system; "
                                                                   "idempotency key for creation.")]
    number: Annotated[Text, Field(max_length=100)]
    customer: CustomerIn
    currency: Annotated[str, Field(examples=["EUR"]), AfterValidator(check_currency)]  # before amount_due
    amount_due: Amount
    issue_date: IsoDate
    due_date: Annotated[IsoDate, AfterValidator(check_due_date)]
    payment_url: Annotated[str | None, AfterValidator(check_payment_url)] = None
    metadata: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=40), AfterValidator(check_text)],
             Annotated[str, Field(max_length=500), AfterValidator(check_text)]],
        Field(max_length=50, description="String to string, at most 50 keys."),
    ] = Field(default_factory=dict)

    def content_hash(self) -> bytes:
        """SHA-256 of the canonical content: equal for two requests that mean the same invoice."""
        canonical = {
            "external_id": self.external_id, "number": self.number, "customer": self.customer.__dict__,
            "currency": self.currency, "amount_due": format_amount(self.amount_due, self.currency),
            "issue_date": self.issue_date, "due_date": self.due_date, "payment_url": self.payment_url,
            "metadata": self.metadata,
        }
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


invoice_adapter: TypeAdapter[InvoiceIn] = TypeAdapter(InvoiceIn)


def error_list(exc, prefix: str = "") -> list[dict[str, str]]:
    """A pydantic ValidationError as [{field, message}] with dotted paths (prefix.0.customer.locale)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        path = ".".join(str(p) for p in err["loc"])
        out.append({"field": f"{prefix}.{path}" if prefix and path else (prefix or path or "(body)"),
                    "message": err["msg"]})
    return out


def canonical_fingerprint(method: str, path: str, body: Any) -> bytes:
    """Idempotency-Key fingerprint: method, path and the body with sorted keys (whitespace-blind)."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return digest.digest()


# --- responses (documentation; the routes serialise with orjson) ---------------------------------

class CustomerOut(BaseModel):
    id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str


class PaymentOut(BaseModel):
    payment_id: str
    source: Literal["stripe", "api"]
    source_reference: str
    currency: str
    amount: str
    amount_applied: str
    balance_remaining: str
    settled: bool
    received_at: datetime
    acknowledged_at: datetime


class StageHistoryOut(BaseModel):
    state: str
    at: datetime
    reason: str | None


class StageOut(BaseModel):
    stage_id: str
    stage: str
    sequence: int | None
    channel: str
    scheduled_at: datetime | None
    state: Literal["scheduled", "escalated", "sent", "failed", "cancelled", "skipped"]
    changed_at: datetime
    reason: str | None
    history: list[StageHistoryOut]


class InvoiceOut(BaseModel):
    id: str
    external_id: str
    number: str
    status: Literal["open", "paid", "void"]
    currency: str
    amount_due: str
    balance: str
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    customer: CustomerOut
    created_at: datetime


class InvoiceDetail(InvoiceOut):
    payments: list[PaymentOut]
    timeline: list[StageOut]


InvoiceList = Page[InvoiceOut]


class BulkResult(BaseModel):
    index: int
    status: Literal["created", "existing", "conflict", "invalid"]
    id: str | None = None
    errors: list[FieldError] | None = None


class BulkSummary(BaseModel):
    created: int
    existing: int
    failed: int


class BulkResponse(BaseModel):
    summary: BulkSummary
    results: list[BulkResult]


