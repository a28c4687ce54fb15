"""The event contracts as typed records: one frozen record per event type and version.

The JSON Schemas in `schemas/events/` are the contract; each record here has the fields of its
schema's `data`, money as `Decimal`, instants as aware UTC `datetime`, calendar days as `date`.
`from_data` reads the envelope's `data` (already validated against the schema, see
`dunning.events.decode`) and `to_data` writes it back in its JSON form; both are written out field
by field because the consumers decode thousands of events a second (no per-event model
validation). The records are `NamedTuple`s: immutable like a frozen dataclass, and built about
seven times faster (a frozen dataclass's `__init__` sets each field through `object.__setattr__`;
measured 1.4 us against 0.2 us for nine fields, per record, per nested part).
A record knows its type string (`TYPE`) and the `SOURCE` its schema fixes; its topic comes from
the catalogue in `schemas/topics/*.yaml` (`topic(InvoiceIssued)`): topic names are written only
there. `dunning.events.envelope(record)` wraps a record in its CloudEvents envelope.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, Union

from dunning.clock import isoformat

__all__ = [
    "Contract", "Customer", "DunningPlanned", "InvoiceIssued", "PaymentReceived", "PaymentsWatermark",
    "PlannedStage", "ReminderFailed", "ReminderSent", "StageEscalated", "StageInvoice", "StageRef",
    "StagesCancelled", "BY_TYPE", "instant_text", "subject_of", "tenant_of", "topic", "topic_of",
]

_INSTANT_TEXT: dict[datetime, str] = {}


def instant_text(value: datetime) -> str:
    """`dunning.clock.isoformat`, remembered: the events of a bulk import share their instants."""
    text = _INSTANT_TEXT.get(value)
    if text is None:
        if len(_INSTANT_TEXT) >= 50_000:
            _INSTANT_TEXT.clear()
        text = _INSTANT_TEXT[value] = isoformat(value)
    return text


_instant = datetime.fromisoformat  # "...Z" -> aware UTC (Python >= 3.11)
_day = date.fromisoformat
_new = tuple.__new__  # a NamedTuple from its values without the generated __new__ (decode path)


def topic_of(event_type: str) -> str:
    """The topic an event type travels on, from the catalogue (`schemas/topics/*.yaml`)."""
    from dunning.events import topic_for_type  # events imports this module (decode, envelope)

    return topic_for_type()[event_type]


# --- parts shared by several events ---------------------------------------------------------


class Customer(NamedTuple):
    customer_id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "Customer":
        return _new(cls, (d["customer_id"], d["external_id"], d["name"], d["email"], d["locale"], d["timezone"]))

    def to_data(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "external_id": self.external_id, "name": self.name,
                "email": self.email, "locale": self.locale, "timezone": self.timezone}


# --- invoices topic -------------------------------------------------------------------------


class InvoiceIssued(NamedTuple):
    TYPE = "dunning.InvoiceIssued.v1"
    SOURCE = "/invoice-ingest"
    invoice_id: str
    tenant_id: str
    external_id: str
    number: str
    customer: Customer
    currency: str
    amount_due: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]
    issued_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "InvoiceIssued":
        return _new(cls, (d["invoice_id"], d["tenant_id"], d["external_id"], d["number"], Customer.from_data(d["customer"]),
                   d["currency"], Decimal(d["amount_due"]), _day(d["issue_date"]), _day(d["due_date"]),
                   d["payment_url"], d["metadata"], _instant(d["issued_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"invoice_id": self.invoice_id, "tenant_id": self.tenant_id, "external_id": self.external_id,
                "number": self.number, "customer": self.customer.to_data(), "currency": self.currency,
                "amount_due": str(self.amount_due), "issue_date": self.issue_date.isoformat(),
                "due_date": self.due_date.isoformat(), "payment_url": self.payment_url, "metadata": self.metadata,
                "issued_at": instant_text(self.issued_at)}


# --- stages topic ---------------------------------------------------------------------------


class PlannedStage(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime
    state: str  # scheduled | skipped | cancelled
    reason: str | None

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PlannedStage":
        return _new(cls, (d["stage_id"], d["stage"], d["sequence"], d["channel"], _instant(d["scheduled_at"]), d["state"],
                   d["reason"]))

    def to_data(self) -> dict[str, Any]:
        return {"stage_id": self.stage_id, "stage": self.stage, "sequence": self.sequence, "channel": self.channel,
                "scheduled_at": instant_text(self.scheduled_at), "state": self.state, "reason": self.reason}


class DunningPlanned(NamedTuple):
    TYPE = "dunning.DunningPlanned.v1"
    SOURCE = "/scheduler"
    invoice_id: str
    tenant_id: str
    policy_id: str
    policy_version: int
    planned_at: datetime
    stages: tuple[PlannedStage, ...]

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "DunningPlanned":
        return _new(cls, (d["invoice_id"], d["tenant_id"], d["policy_id"], d["policy_version"], _instant(d["planned_at"]),
                   tuple([PlannedStage.from_data(s) for s in d["stages"]])))

    def to_data(self) -> dict[str, Any]:
        return {"invoice_id": self.invoice_id, "tenant_id": self.tenant_id, "policy_id": self.policy_id,
                "policy_version": self.policy_version, "planned_at": instant_text(self.planned_at),
                "stages": [s.to_data() for s in self.stages]}


class StageInvoice(NamedTuple):
    """The invoice as a reminder shows it (StageEscalated.invoice)."""

    external_id: str
    number: str
    currency: str
    amount_due: Decimal
    balance: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageInvoice":
        return _new(cls, (d["external_id"], d["number"], d["currency"], Decimal(d["amount_due"]), Decimal(d["balance"]),
                   _day(d["issue_date"]), _day(d["due_date"]), d["payment_url"]))

    def to_data(self) -> dict[str, Any]:
        return {"external_id": self.external_id, "number": self.number, "currency": self.currency,
                "amount_due": str(self.amount_due), "balance": str(self.balance),
                "issue_date": self.issue_date.isoformat(), "due_date": self.due_date.isoformat(),
                "payment_url": self.payment_url}


class StageEscalated(NamedTuple):
    TYPE = "dunning.StageEscalated.v1"
    SOURCE = "/scheduler"
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    fired_at: datetime
    invoice: StageInvoice
    customer: Customer

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageEscalated":
        return _new(cls, (d["stage_id"], d["invoice_id"], d["tenant_id"], d["stage"], d["sequence"], d["channel"],
                   d["template"], _instant(d["scheduled_at"]), _instant(d["fired_at"]),
                   StageInvoice.from_data(d["invoice"]), Customer.from_data(d["customer"])))

    def to_data(self) -> dict[str, Any]:
        return {"stage_id": self.stage_id, "invoice_id": self.invoice_id, "tenant_id": self.tenant_id,
                "stage": self.stage, "sequence": self.sequence, "channel": self.channel, "template": self.template,
                "scheduled_at": instant_text(self.scheduled_at), "fired_at": instant_text(self.fired_at),
                "invoice": self.invoice.to_data(), "customer": self.customer.to_data()}


class StageRef(NamedTuple):
    """A cancelled stage (StagesCancelled.stages)."""

    stage_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StageRef":
        return _new(cls, (d["stage_id"], d["stage"], d["sequence"], d["channel"], _instant(d["scheduled_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"stage_id": self.stage_id, "stage": self.stage, "sequence": self.sequence, "channel": self.channel,
                "scheduled_at": instant_text(self.scheduled_at)}


class StagesCancelled(NamedTuple):
    TYPE = "dunning.StagesCancelled.v1"
    SOURCE = "/scheduler"
    invoice_id: str
    tenant_id: str
    reason: str  # invoice_settled | invoice_voided
    cause_event_id: str | None
    cancelled_at: datetime
    stages: tuple[StageRef, ...]

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "StagesCancelled":
        return _new(cls, (d["invoice_id"], d["tenant_id"], d["reason"], d["cause_event_id"], _instant(d["cancelled_at"]),
                   tuple([StageRef.from_data(s) for s in d["stages"]])))

    def to_data(self) -> dict[str, Any]:
        return {"invoice_id": self.invoice_id, "tenant_id": self.tenant_id, "reason": self.reason,
                "cause_event_id": self.cause_event_id, "cancelled_at": instant_text(self.cancelled_at),
                "stages": [s.to_data() for s in self.stages]}


# --- payments and watermarks topics ---------------------------------------------------------


class PaymentReceived(NamedTuple):
    TYPE = "dunning.PaymentReceived.v1"
    SOURCE = "/reconciliation"
    payment_id: str
    invoice_id: str
    tenant_id: str
    invoice_external_id: str
    source: str  # stripe | api
    source_reference: str
    currency: str
    amount: Decimal
    amount_applied: Decimal
    balance_remaining: Decimal
    settled: bool
    received_at: datetime
    acknowledged_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PaymentReceived":
        return _new(cls, (d["payment_id"], d["invoice_id"], d["tenant_id"], d["invoice_external_id"], d["source"],
                   d["source_reference"], d["currency"], Decimal(d["amount"]), Decimal(d["amount_applied"]),
                   Decimal(d["balance_remaining"]), d["settled"], _instant(d["received_at"]),
                   _instant(d["acknowledged_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"payment_id": self.payment_id, "invoice_id": self.invoice_id, "tenant_id": self.tenant_id,
                "invoice_external_id": self.invoice_external_id, "source": self.source,
                "source_reference": self.source_reference, "currency": self.currency, "amount": str(self.amount),
                "amount_applied": str(self.amount_applied), "balance_remaining": str(self.balance_remaining),
                "settled": self.settled, "received_at": instant_text(self.received_at),
                "acknowledged_at": instant_text(self.acknowledged_at)}


class PaymentsWatermark(NamedTuple):
    """Reconciliation's heartbeat statement; offsets by partition number as text (the JSON form)."""

    TYPE = "dunning.PaymentsWatermark.v1"
    SOURCE = "/reconciliation"
    SUBJECT = "_payments"
    TENANT = "_system"
    watermark: datetime
    payments_topic: str
    payments_offsets: dict[str, int]
    invoices_topic: str
    invoice_positions: dict[str, int]
    computed_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PaymentsWatermark":
        return _new(cls, (_instant(d["watermark"]), d["payments_topic"], d["payments_offsets"], d["invoices_topic"],
                   d["invoice_positions"], _instant(d["computed_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"watermark": instant_text(self.watermark), "payments_topic": self.payments_topic,
                "payments_offsets": self.payments_offsets, "invoices_topic": self.invoices_topic,
                "invoice_positions": self.invoice_positions, "computed_at": instant_text(self.computed_at)}


# --- deliveries topic -----------------------------------------------------------------------


class ReminderSent(NamedTuple):
    TYPE = "dunning.ReminderSent.v1"
    SOURCE = "/notifier"
    delivery_id: str
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    channel: str
    recipient: str
    provider_message_id: str
    sent_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "ReminderSent":
        return _new(cls, (d["delivery_id"], d["stage_id"], d["invoice_id"], d["tenant_id"], d["stage"], d["channel"],
                   d["recipient"], d["provider_message_id"], _instant(d["sent_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "stage_id": self.stage_id, "invoice_id": self.invoice_id,
                "tenant_id": self.tenant_id, "stage": self.stage, "channel": self.channel,
                "recipient": self.recipient, "provider_message_id": self.provider_message_id,
                "sent_at": instant_text(self.sent_at)}


class ReminderFailed(NamedTuple):
    TYPE = "dunning.ReminderFailed.v1"
    SOURCE = "/notifier"
    delivery_id: str
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    channel: str
    recipient: str | None
    error_code: str
    error: str
    permanent: bool
    attempts: int
    failed_at: datetime

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "ReminderFailed":
        return _new(cls, (d["delivery_id"], d["stage_id"], d["invoice_id"], d["tenant_id"], d["stage"], d["channel"],
                   d["recipient"], d["error_code"], d["error"], d["permanent"], d["attempts"],
                   _instant(d["failed_at"])))

    def to_data(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "stage_id": self.stage_id, "invoice_id": self.invoice_id,
                "tenant_id": self.tenant_id, "stage": self.stage, "channel": self.channel,
                "recipient": self.recipient, "error_code": self.error_code, "error": self.error,
                "permanent": self.permanent, "attempts": self.attempts, "failed_at": instant_text(self.failed_at)}


Contract = Union[InvoiceIssued, DunningPlanned, StageEscalated, StagesCancelled, PaymentReceived, PaymentsWatermark,
                 ReminderSent, ReminderFailed]
BY_TYPE: dict[str, Any] = {cls.TYPE: cls for cls in (
    InvoiceIssued, DunningPlanned, StageEscalated, StagesCancelled, PaymentReceived, PaymentsWatermark,
    ReminderSent, ReminderFailed,
)}


def topic(record_type: Any) -> str:
    """The topic a record type travels on: `topic(InvoiceIssued)` -> `dunning.invoices.v1`."""
    return topic_of(record_type.TYPE)


def subject_of(record: Any) -> str:
    """The envelope's subject and Kafka key: the invoice id (the watermark's is fixed)."""
    return getattr(record, "SUBJECT", None) or record.invoice_id


def tenant_of(record: Any) -> str:
    return getattr(record, "TENANT", None) or record.tenant_id
