"""Stripe events -> payments: parse the event JSON, convert minor units the way Stripe defines them,
and collect the keys that find the invoice. Pure functions; no I/O. (The events about money after it
came, refunds, disputes and the like, are read by stripe_objects.)

Minor units (https://docs.stripe.com/currencies#zero-decimal):
- zero-decimal: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF (5000 JPY = ¥5000);
- three-decimal: BHD JOD KWD OMR TND (1234 KWD = 1.234 KD);
- every other currency has two, including Stripe's special cases: ISK (ISO exponent 0, but Stripe
  keeps a two-decimal representation whose decimals are always 00: 500 = 5 ISK) and HUF/TWD (two
  decimals for charges; zero only for payouts, which we never see). An amount whose Stripe value
  does not fit the currency's ISO 4217 exponent (ISK 550 = 5.50 ISK) is refused, never rounded.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeGuard

import orjson

from dunning.money import MoneyError, from_minor, validate_currency
from dunning_reconciliation.domain import IncomingPayment, MatchKeys

ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())

INVOICE_PAID = "invoice.paid"
PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"


class StripeEventError(ValueError):
    """A signed event we cannot read; names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int | None
    object: dict[str, Any]


@dataclass(frozen=True)
class Ignored:
    reason: str


def stripe_digits(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def amount_from_minor(minor: object, currency: str) -> Decimal:
    """Stripe minor units -> a Decimal in the currency's ISO 4217 exponent (refused if inexact)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise MoneyError("must be an integer number of minor units")
    if minor < 0:
        raise MoneyError("must not be negative")
    digits = stripe_digits(currency)
    exact = Decimal(minor).scaleb(-digits)
    amount = from_minor(minor, currency, digits=digits)
    if amount != exact:
        raise MoneyError(f"{minor} is {exact} {currency}, which has more decimals than {currency} allows")
    return amount


def parse_event(body: bytes) -> StripeEvent:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise StripeEventError("(body)", "is not valid JSON") from None
    if not isinstance(event, dict):
        raise StripeEventError("(body)", "must be a JSON object (a Stripe event)")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 255:
        raise StripeEventError("id", "must be the Stripe event id")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 255:
        raise StripeEventError("type", "must be the Stripe event type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise StripeEventError("data.object", "must be an object")
    created = event.get("created")
    return StripeEvent(event_id, event_type, created if is_unix(created) else None, obj)


def payment_from_event(tenant_id: str, event: StripeEvent) -> IncomingPayment | Ignored:
    if event.type == INVOICE_PAID:
        return _from_invoice(tenant_id, event)
    if event.type == PAYMENT_INTENT_SUCCEEDED:
        return _from_payment_intent(tenant_id, event)
    return Ignored("unhandled_type")


def _from_invoice(tenant_id: str, event: StripeEvent) -> IncomingPayment | Ignored:
    transitions = event.object.get("status_transitions")
    paid_at = transitions.get("paid_at") if isinstance(transitions, dict) else None
    return payment_of(tenant_id, event, "amount_paid", invoice_keys_of(event.object), paid_at)


def invoice_keys_of(obj: dict[str, Any]) -> MatchKeys:
    """The keys of a Stripe Invoice: our id from its metadata, the accounting ids, its number."""
    metadata = metadata_of(obj)
    return MatchKeys.of(
        metadata.get("dunning_invoice_id"),
        # The Stripe invoice id comes last: when Stripe is the accounting system, it is the external id.
        (metadata.get("invoice_external_id"), metadata.get("external_id"), text_of(obj.get("id"))),
        (metadata.get("invoice_number"), text_of(obj.get("number"))),
    )


def intent_keys_of(obj: dict[str, Any]) -> MatchKeys:
    """The keys of a PaymentIntent (or of its Stripe invoice, whose id is then an external id)."""
    metadata = metadata_of(obj)
    return MatchKeys.of(
        metadata.get("dunning_invoice_id"),
        (metadata.get("invoice_external_id"), metadata.get("external_id"), text_of(obj.get("invoice"))),
        (metadata.get("invoice_number"),),
    )


def _from_payment_intent(tenant_id: str, event: StripeEvent) -> IncomingPayment | Ignored:
    obj = event.object
    if obj.get("invoice"):
        # The PaymentIntent of a Stripe invoice: that invoice's invoice.paid carries the money.
        return Ignored("invoice_payment_intent")
    # The event's creation is when the intent succeeded; the intent's own `created` can be days older.
    return payment_of(tenant_id, event, "amount_received", intent_keys_of(obj), event.created or obj.get("created"))


def payment_of(
    tenant_id: str,
    event: StripeEvent,
    amount_field: str,
    keys: MatchKeys,
    when: Any,
    *,
    object_id: str | None = None,
) -> IncomingPayment | Ignored:
    """The payment an event's object carries; `object_id` (default: the object's id) is the Stripe
    object that carries the money, one payment per object."""
    obj = event.object
    object_id = object_id or text_of(obj.get("id"))
    if object_id is None:
        raise StripeEventError("data.object.id", "is missing")
    currency, amount = money_of(obj, amount_field)
    if amount == 0:
        return Ignored("zero_amount")
    when = when if is_unix(when) else event.created
    if when is None:
        raise StripeEventError("created", "is missing: cannot tell when the payment was received")
    return IncomingPayment(
        tenant_id=tenant_id,
        source="stripe",
        source_reference=event.id,
        currency=currency,
        amount=amount,
        received_at=datetime.fromtimestamp(when, tz=UTC),
        keys=keys,
        stripe_object_id=object_id,
    )


def money_of(obj: dict[str, Any], amount_field: str, where: str = "data.object") -> tuple[str, Decimal]:
    """(currency, amount) of a Stripe object: its lowercase `currency` and an amount in minor units,
    refused with the field named when either cannot be read exactly."""
    raw_currency = obj.get("currency")
    if not isinstance(raw_currency, str):
        raise StripeEventError(f"{where}.currency", "is missing")
    try:
        currency = validate_currency(raw_currency.upper())
    except MoneyError as exc:
        raise StripeEventError(f"{where}.currency", str(exc)) from None
    try:
        return currency, amount_from_minor(obj.get(amount_field), currency)
    except MoneyError as exc:
        raise StripeEventError(f"{where}.{amount_field}", str(exc)) from None


def metadata_of(obj: dict[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    return {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}


def text_of(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def is_unix(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**33
