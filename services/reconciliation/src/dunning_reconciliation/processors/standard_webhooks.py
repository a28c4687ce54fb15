"""Standard Webhooks (https://www.standardwebhooks.com/): the signature, checked by the
`standardwebhooks` package, and our inbound event vocabulary (docs/processors.md).

Headers `webhook-id`, `webhook-timestamp` (unix seconds, within 5 minutes of now either side) and
`webhook-signature` ("v1,<base64>" items, space-separated); the signed content is
`{id}.{timestamp}.{raw body}`, HMAC-SHA256 keyed with the base64 of the `whsec_…` secret. A replayed
`webhook-id` is a duplicate (recorded in `processor_events`).

The body is `{"type": ..., "timestamp": ..., "data": {...}}`; `data.id` is the processor's payment id.
"""

import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dunning.money import MoneyError, parse_amount, validate_currency
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.processors import events as ev

PROCESSOR = "standard_webhooks"
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
_NO_SECRET = "whsec_bm8tYWN0aXZlLXNlY3JldC1mb3ItdGhpcy1lbmRwb2ludA=="
TYPES = {
    "payment.processing": ev.PROCESSING,
    "payment.succeeded": ev.SUCCEEDED,
    "payment.failed": ev.FAILED,
    "payment.refunded": ev.REFUND,
    "payment.disputed": ev.DISPUTE_OPENED,
    "payment.dispute_closed": ev.DISPUTE_CLOSED,
}
# The events that bring a payment's money (amount, currency and its invoice are required).
_WITH_MONEY = frozenset({ev.PROCESSING, ev.SUCCEEDED})
_MAX_TEXT = 1000


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
    """The webhook-id of a delivery signed with one of the secrets, within the tolerance; else
    SignatureError (a stale timestamp is told apart: it fails with any secret)."""
    wanted: dict[str, str] = {}
    for name in HEADERS:
        value = headers.get(name)
        if not value or len(value) > 4096:
            raise ev.SignatureError(f"Missing {name} header.", name)
        wanted[name] = value
    reason, field = "No matching signature found", "webhook-signature"
    matched = False
    for secret in secrets or (_NO_SECRET,):
        try:
            Webhook(secret).verify(body, wanted, json_parse=False)
            matched = True
        except WebhookVerificationError as exc:
            reason = str(exc)
            if "timestamp" in reason.lower() or "Invalid Signature Headers" in reason:
                field = "webhook-timestamp"
        except (ValueError, binascii.Error):  # a malformed signature item, a body that is not UTF-8
            reason = "Malformed webhook-signature header"
    if not secrets or not matched:
        raise ev.SignatureError(reason, field)
    return wanted["webhook-id"]


def sign(body: bytes | str, secret: str, msg_id: str, timestamp: int) -> dict[str, str]:
    """The three headers a Standard Webhooks sender would send (tests, the demo)."""
    text = body.decode() if isinstance(body, bytes) else body
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), text)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def parse(tenant_id: str, event_id: str, body: bytes, *, received_at: datetime) -> ev.ProcessorEvent:
    """The delivery's one event, or EventError naming the field (then nothing is applied)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ev.EventError("(body)", "is not valid JSON") from None
    if not isinstance(document, dict):
        raise ev.EventError("(body)", "must be a JSON object with type, timestamp and data")
    kind = document.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 255:
        raise ev.EventError("type", "must be the event type, e.g. payment.succeeded")
    occurred_at = _timestamp(document.get("timestamp"), received_at)
    action = TYPES.get(kind)
    if action is None:
        return ev.ProcessorEvent(PROCESSOR, event_id, kind, ev.IGNORED, None, occurred_at, reason="unknown_type")
    data = document.get("data")
    if not isinstance(data, dict):
        raise ev.EventError("data", "must be an object")
    reference = _required(data, "id")
    payment = _payment(tenant_id, reference, data, occurred_at, required=action in _WITH_MONEY)
    if action == ev.REFUND:
        refund_id = _required(data, "refund_id")
        amount = _amount(data, _currency(data)) if "amount" in data else None
        return ev.ProcessorEvent(
            PROCESSOR, event_id, kind, action, reference, occurred_at, payment, amount=amount, reference=refund_id
        )
    if action in (ev.DISPUTE_OPENED, ev.DISPUTE_CLOSED):
        dispute_id = _required(data, "dispute_id")
        outcome = None
        if action == ev.DISPUTE_CLOSED:
            outcome = data.get("status")
            if outcome not in ("won", "lost"):
                raise ev.EventError("data.status", "must be won or lost")
        return ev.ProcessorEvent(
            PROCESSOR, event_id, kind, action, reference, occurred_at, payment, reference=dispute_id, outcome=outcome
        )
    return ev.ProcessorEvent(PROCESSOR, event_id, kind, action, reference, occurred_at, payment)


def _text(data: dict[str, Any], key: str, *, required: bool = False, where: str = "data") -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise ev.EventError(f"{where}.{key}", f"must be a non-empty string of at most {_MAX_TEXT} characters")
    return value.strip()


def _required(data: dict[str, Any], key: str) -> str:
    value = _text(data, key, required=True)
    assert value is not None
    return value


def _currency(data: dict[str, Any]) -> str:
    try:
        return validate_currency(data.get("currency"))  # type: ignore[arg-type]
    except MoneyError as exc:
        raise ev.EventError("data.currency", str(exc)) from None


def _amount(data: dict[str, Any], currency: str) -> Decimal:
    try:
        return parse_amount(data.get("amount"), currency)  # type: ignore[arg-type]
    except MoneyError as exc:
        raise ev.EventError("data.amount", str(exc)) from None


def _payment(
    tenant_id: str, reference: str, data: dict[str, Any], at: datetime, *, required: bool
) -> IncomingPayment | None:
    """The payment's money, its invoice keys and its payer; None when the event does not bring them
    (a refund or a dispute names a payment seen before)."""
    if not required and not all(k in data for k in ("amount", "currency")):
        return None
    currency = _currency(data)
    amount = _amount(data, currency)
    invoice_id = _text(data, "invoice_id")
    external_id = _text(data, "invoice_external_id")
    number = _text(data, "invoice_number")
    remittance = _text(data, "remittance")
    if required and not (invoice_id or external_id or number or remittance):
        raise ev.EventError(
            "data.invoice_id", "name the invoice (invoice_id, invoice_external_id, invoice_number) or give a remittance"
        )
    payer = data.get("payer")
    if payer is not None and not isinstance(payer, dict):
        raise ev.EventError("data.payer", "must be an object with name and account")
    payer = payer or {}
    account = _text(payer, "account", where="data.payer")
    return IncomingPayment(
        tenant_id=tenant_id,
        source=PROCESSOR,
        source_reference=reference,
        currency=currency,
        amount=amount,
        received_at=at,
        keys=MatchKeys.of(invoice_id, (external_id,) if external_id else (), (number,) if number else ()),
        payer_name=_text(payer, "name", where="data.payer"),
        payer_account="".join(account.split()).upper() if account else None,
        remittance=remittance,
    )


def _timestamp(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ev.EventError("timestamp", "must be an ISO 8601 time with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ev.EventError("timestamp", "must be an ISO 8601 time with a UTC offset") from None
    if parsed.tzinfo is None:
        raise ev.EventError("timestamp", "must carry a UTC offset")
    return parsed.astimezone(UTC)
