"""The Stripe events beyond a plain payment (API version 2024-06-20 shapes), read into small records:
a debit still processing or failed, refunds, disputes, an invoice Stripe closed, a credit note.
Pure functions; no I/O. `read_event` is the one entry: it answers what an event means.

Which payment a refund or a dispute concerns is named by Stripe ids (`pi_…`, `ch_…`, `in_…`):
`stripe_money` finds our payment by them. Amounts are minor units, converted as `stripe_events`
converts a payment's (refused, never rounded, when the currency cannot hold them).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dunning_reconciliation.domain import IncomingPayment
from dunning_reconciliation.stripe_events import (
    INVOICE_PAID,
    PAYMENT_INTENT_SUCCEEDED,
    Ignored,
    StripeEvent,
    StripeEventError,
    intent_keys_of,
    invoice_keys_of,
    is_unix,
    money_of,
    payment_from_event,
    payment_of,
    text_of,
)

PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
PAYMENT_INTENT_FAILED = "payment_intent.payment_failed"
CHARGE_REFUNDED = "charge.refunded"
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
DISPUTE_CREATED = "charge.dispute.created"
DISPUTE_CLOSED = "charge.dispute.closed"
INVOICE_CLOSING = {"invoice.voided": "void", "invoice.marked_uncollectible": "write_off"}
CREDIT_NOTE_CREATED = "credit_note.created"
# A dispute closed `won` or `warning_closed` (an inquiry that never became a chargeback) leaves the
# money with the merchant; `lost` takes it back.
DISPUTE_OUTCOMES = {"won": "won", "warning_closed": "won", "lost": "lost"}


@dataclass(frozen=True)
class Processing:
    """payment_intent.processing: a debit in flight, not paid. Its `stripe_object_id` is the object
    whose success will carry the money: the intent, or its Stripe invoice (invoice.paid)."""

    payment: IncomingPayment
    links: tuple[str, ...]


@dataclass(frozen=True)
class IntentFailed:
    """payment_intent.payment_failed: the processing payment (if any) of these objects failed."""

    object_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Refund:
    refund_id: str  # re_…
    status: str  # succeeded | pending | requires_action | failed | canceled
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class Refunds:
    """Refunds of one charge or intent. `charge_refunded` is the charge's cumulative amount refunded
    (charge.refunded), which also counts refunds the event does not list (since API 2022-11-15 a
    Charge no longer lists its refunds unless expanded)."""

    object_ids: tuple[str, ...]  # pi_, ch_, in_: whichever the event names
    refunds: tuple[Refund, ...]
    charge_id: str | None = None
    charge_refunded: Decimal | None = None
    currency: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Dispute:
    dispute_id: str  # dp_… (du_… for older ones)
    object_ids: tuple[str, ...]  # the disputed charge and its intent
    currency: str
    amount: Decimal
    status: str
    outcome: str | None  # None while open; won | lost once closed
    at: datetime


@dataclass(frozen=True)
class InvoiceClosed:
    stripe_invoice_id: str
    action: str  # void | write_off
    keys: Any  # MatchKeys, as invoice.paid's
    reason: str
    closed_at: datetime


@dataclass(frozen=True)
class CreditNote:
    credit_note_id: str  # cn_…
    stripe_invoice_id: str
    currency: str
    amount: Decimal  # what reduces the invoice's open amount (the pre-payment part)
    reason: str


Action = IncomingPayment | Ignored | Processing | IntentFailed | Refunds | Dispute | InvoiceClosed | CreditNote


def read_event(tenant_id: str, event: StripeEvent) -> Action:
    """What an event means for reconciliation (raises StripeEventError naming the field)."""
    t = event.type
    if t in (INVOICE_PAID, PAYMENT_INTENT_SUCCEEDED):
        return payment_from_event(tenant_id, event)
    if t == PAYMENT_INTENT_PROCESSING:
        return _processing(tenant_id, event)
    if t == PAYMENT_INTENT_FAILED:
        return IntentFailed(_ids(event.object, "id", "invoice"), _failure(event.object))
    if t == CHARGE_REFUNDED:
        return _charge_refunded(event)
    if t in REFUND_EVENTS:
        return _refund_event(event)
    if t in (DISPUTE_CREATED, DISPUTE_CLOSED):
        return _dispute(event, closed=t == DISPUTE_CLOSED)
    if t in INVOICE_CLOSING:
        return _invoice_closed(event, INVOICE_CLOSING[t])
    if t == CREDIT_NOTE_CREATED:
        return _credit_note(event)
    return Ignored("unhandled_type")


def links_of(event: StripeEvent) -> tuple[str, ...]:
    """Other Stripe ids of a payment's money (an invoice's intent and charge, an intent's charge),
    by which a later refund or dispute names it."""
    return _ids(event.object, "payment_intent", "charge", "latest_charge")


def _processing(tenant_id: str, event: StripeEvent) -> Processing | Ignored:
    obj = event.object
    invoice = text_of(obj.get("invoice"))
    # While processing, `amount_received` is 0: the money in flight is the intent's `amount`.
    payment = payment_of(tenant_id, event, "amount", intent_keys_of(obj), event.created, object_id=invoice)
    if isinstance(payment, Ignored):
        return payment
    return Processing(payment, _ids(obj, "id", "latest_charge") if invoice else _ids(obj, "latest_charge"))


def _failure(obj: dict[str, Any]) -> str:
    error = obj.get("last_payment_error")
    if isinstance(error, dict):
        return text_of(error.get("code")) or text_of(error.get("message")) or "payment_failed"
    return "payment_failed"


def _charge_refunded(event: StripeEvent) -> Refunds:
    obj = event.object
    currency, refunded = money_of(obj, "amount_refunded")
    listed = obj.get("refunds")
    data = listed.get("data") if isinstance(listed, dict) else None
    refunds = tuple(
        _refund(r, f"data.object.refunds.data[{i}]") for i, r in enumerate(data or []) if isinstance(r, dict)
    )
    return Refunds(
        _ids(obj, "payment_intent", "id", "invoice"),
        refunds,
        charge_id=text_of(obj.get("id")),
        charge_refunded=refunded,
        currency=currency,
        at=_at(event, obj),
    )


def _refund_event(event: StripeEvent) -> Refunds:
    obj = event.object
    return Refunds(_ids(obj, "payment_intent", "charge"), (_refund(obj, "data.object"),), at=_at(event, obj))


def _refund(obj: dict[str, Any], where: str) -> Refund:
    refund_id = text_of(obj.get("id"))
    if refund_id is None:
        raise StripeEventError(f"{where}.id", "is missing")
    status = text_of(obj.get("status"))
    if status is None:
        raise StripeEventError(f"{where}.status", "is missing")
    currency, amount = money_of(obj, "amount", where)
    return Refund(refund_id, status, currency, amount)


def _dispute(event: StripeEvent, *, closed: bool) -> Dispute:
    obj = event.object
    dispute_id, status = text_of(obj.get("id")), text_of(obj.get("status"))
    if dispute_id is None:
        raise StripeEventError("data.object.id", "is missing")
    if status is None:
        raise StripeEventError("data.object.status", "is missing")
    outcome = DISPUTE_OUTCOMES.get(status) if closed else None
    if closed and outcome is None:
        raise StripeEventError("data.object.status", f"{status!r} is not the status of a closed dispute")
    currency, amount = money_of(obj, "amount")
    return Dispute(
        dispute_id, _ids(obj, "payment_intent", "charge"), currency, amount, status, outcome, _at(event, obj)
    )


def _invoice_closed(event: StripeEvent, action: str) -> InvoiceClosed:
    obj = event.object
    stripe_id = text_of(obj.get("id"))
    if stripe_id is None:
        raise StripeEventError("data.object.id", "is missing")
    transitions = obj.get("status_transitions")
    field = "voided_at" if action == "void" else "marked_uncollectible_at"
    when = transitions.get(field) if isinstance(transitions, dict) else None
    closed_at = datetime.fromtimestamp(when, tz=UTC) if is_unix(when) else _at(event, obj)
    reason = "voided in Stripe" if action == "void" else "marked uncollectible in Stripe"
    return InvoiceClosed(stripe_id, action, invoice_keys_of(obj), reason, closed_at)


def _credit_note(event: StripeEvent) -> CreditNote | Ignored:
    obj = event.object
    credit_note_id, invoice = text_of(obj.get("id")), text_of(obj.get("invoice"))
    if credit_note_id is None:
        raise StripeEventError("data.object.id", "is missing")
    if invoice is None:
        raise StripeEventError("data.object.invoice", "is missing")
    # A credit note on an open invoice lowers what is owed (pre-payment); on a paid one (post-payment)
    # its money goes back as a refund (charge.refunded) or as customer balance: nothing to apply here.
    if obj.get("type") == "post_payment":
        return Ignored("post_payment_credit_note")
    field = "pre_payment_amount" if "pre_payment_amount" in obj else "amount"
    currency, amount = money_of(obj, field)
    if amount == 0:
        return Ignored("zero_amount")
    code = text_of(obj.get("reason"))  # duplicate | fraudulent | order_change | product_unsatisfactory
    why = [w for w in (code.replace("_", " ") if code else None, text_of(obj.get("memo"))) if w]
    number = text_of(obj.get("number"))
    reason = ": ".join(why) if why else f"Stripe credit note {number or credit_note_id}"
    return CreditNote(credit_note_id, invoice, currency, amount, reason[:500])


def _ids(obj: dict[str, Any], *fields: str) -> tuple[str, ...]:
    """The Stripe ids in these fields, each an id or an expanded object with an id."""
    ids: dict[str, None] = {}
    for name in fields:
        value = obj.get(name)
        text = text_of(value.get("id") if isinstance(value, dict) else value)
        if text:
            ids.setdefault(text, None)
    return tuple(ids)


def _at(event: StripeEvent, obj: dict[str, Any]) -> datetime:
    when = event.created if event.created is not None else obj.get("created")
    if not is_unix(when):
        raise StripeEventError("created", "is missing: cannot tell when it happened")
    return datetime.fromtimestamp(when, tz=UTC)
