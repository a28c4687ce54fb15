"""GoCardless webhooks: the signature and the events, exactly as GoCardless sends them.

`Webhook-Signature` is the lowercase hex HMAC-SHA256 of the raw body, keyed with the webhook
endpoint's secret; there is no timestamp, so a replay is stopped only by the event ids recorded in
`processor_events`. A bad signature is answered 498 Invalid Token, as GoCardless asks.

The body is `{"events": [...]}` (up to 250). Only events of `resource_type` "payments" move money;
GoCardless events carry no amount, so we require the merchant to set three metadata keys on each
payment it creates for an invoice (GoCardless copies a payment's metadata into its events'
`resource_metadata`): `invoice_id` or `invoice_external_id`, `amount` (minor units, digits) and
`currency`. An event without them is recorded and ignored (a payment that is not for an invoice).
"""

import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from dunning.money import MoneyError, from_minor, validate_currency
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.processors import events as ev

PROCESSOR = "gocardless"
HEADER = "Webhook-Signature"
INVALID_TOKEN = 498  # "Webhooks with an invalid signature must return a 498 Token Invalid error."
MAX_EVENTS = 250
_NO_SECRET = "gocardless-no-active-secret-for-this-endpoint"
# A payment's action -> what it asks of us. paid_out counts as confirmed when no confirmed was seen
# (inbound treats a second success as a duplicate).
ACTIONS = {
    "submitted": ev.PROCESSING,
    "confirmed": ev.SUCCEEDED,
    "paid_out": ev.SUCCEEDED,
    "failed": ev.FAILED,
    "cancelled": ev.FAILED,
    "charged_back": ev.CHARGEBACK,
    "late_failure_settled": ev.LATE_FAILURE,
}


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Raises SignatureError unless the header is the HMAC of the body with one of the secrets."""
    if not header or not header.strip():
        raise ev.SignatureError(f"Missing {HEADER} header.", HEADER)
    given = header.strip().lower().encode("utf-8", "replace")
    matched = False
    for secret in secrets or (_NO_SECRET,):
        # No early exit: the time taken does not tell which secret matched, or whether one exists.
        matched |= hmac.compare_digest(signature(body, secret).encode(), given)
    if not secrets or not matched:
        raise ev.SignatureError("Invalid signature.", HEADER)


def parse(tenant_id: str, body: bytes) -> list[ev.ProcessorEvent]:
    """Every event of the delivery, or EventError naming the field (then nothing is applied). A
    payment event without invoice metadata has no `payment`: inbound looks the payment up (seen
    before with its metadata), else ignores it."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ev.EventError("(body)", "is not valid JSON") from None
    items = document.get("events") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ev.EventError("events", "must be a list of events")
    if len(items) > MAX_EVENTS:
        raise ev.EventError("events", f"at most {MAX_EVENTS} events in one delivery")
    return [_event(tenant_id, i, item) for i, item in enumerate(items)]


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise ev.EventError(f"{where}.{key}", "must be a non-empty string")
    return value


def _event(tenant_id: str, i: int, item: Any) -> ev.ProcessorEvent:
    where = f"events.{i}"
    if not isinstance(item, dict):
        raise ev.EventError(where, "must be an event object")
    event_id, resource, action = (_text(item, k, where) for k in ("id", "resource_type", "action"))
    created_at = _created_at(_text(item, "created_at", where), f"{where}.created_at")
    kind = f"{resource}.{action}"
    details = item.get("details")
    cause = details.get("cause") if isinstance(details, dict) else None
    cause = cause if isinstance(cause, str) else None
    if resource != "payments":
        return ev.ProcessorEvent(PROCESSOR, event_id, kind, ev.IGNORED, None, created_at, reason="not_a_payment")
    links = item.get("links")
    reference = links.get("payment") if isinstance(links, dict) else None
    if not isinstance(reference, str) or not 0 < len(reference) <= 255:
        raise ev.EventError(f"{where}.links.payment", "must be the payment's id (PM…)")
    action_kind = ACTIONS.get(action)
    if action_kind is None:
        return ev.ProcessorEvent(PROCESSOR, event_id, kind, ev.IGNORED, reference, created_at, reason=action)
    metadata = _metadata(item)
    payment = None
    if metadata is not None:
        payment = _payment(tenant_id, reference, metadata, created_at, f"{where}.resource_metadata")
    return ev.ProcessorEvent(PROCESSOR, event_id, kind, action_kind, reference, created_at, payment, reason=cause)


def _metadata(item: dict[str, Any]) -> dict[str, Any] | None:
    """The payment's metadata as the event carries it (resource_metadata; the event's own metadata
    when an API call of the merchant set it there), or None when it names no invoice."""
    for key in ("resource_metadata", "metadata"):
        value = item.get(key)
        if isinstance(value, dict) and (value.get("invoice_id") or value.get("invoice_external_id")):
            return value
    return None


def _payment(tenant_id: str, reference: str, metadata: dict[str, Any], at: datetime, where: str) -> IncomingPayment:
    currency_text, minor = metadata.get("currency"), metadata.get("amount")
    try:
        currency = validate_currency(currency_text.upper() if isinstance(currency_text, str) else "")
    except MoneyError as exc:
        raise ev.EventError(f"{where}.currency", str(exc)) from None
    if not isinstance(minor, str | int) or isinstance(minor, bool) or not str(minor).isdigit():
        raise ev.EventError(f"{where}.amount", 'must be the amount in minor units (digits only, e.g. "125000")')
    try:
        amount = from_minor(int(minor), currency)
    except MoneyError as exc:
        raise ev.EventError(f"{where}.amount", str(exc)) from None
    if amount <= 0 or len(str(minor)) > 15:
        raise ev.EventError(f"{where}.amount", "must be greater than zero and below 10^15 minor units")
    invoice_id, external_id = metadata.get("invoice_id"), metadata.get("invoice_external_id")
    return IncomingPayment(
        tenant_id=tenant_id,
        source=PROCESSOR,
        source_reference=reference,
        currency=currency,
        amount=amount,
        received_at=at,
        keys=MatchKeys.of(
            invoice_id if isinstance(invoice_id, str) else None,
            (external_id,) if isinstance(external_id, str) else (),
        ),
    )


def _created_at(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ev.EventError(field, "must be an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ev.EventError(field, "must carry a UTC offset")
    return parsed.astimezone(UTC)
