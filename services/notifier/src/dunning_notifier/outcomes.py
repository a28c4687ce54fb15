"""What one delivery attempt came to, and the events that tell the other services.

ReminderFailed is published once per delivery, when the notifier stops trying. `permanent` tells
why it stopped: true when retrying cannot help (the server refused the recipient with a 5xx, the
template cannot be rendered, no provider for the channel); false when the cause was transient
(connection refused, timeouts, 4xx) but persisted through `max_attempts` tries. Both are final for
that delivery; false hints that a manual resend later may well succeed. Transient failures that will
still be retried publish nothing (they are visible in the deliveries API: attempts, last_error).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dunning.events import new_event

SOURCE = "/notifier"


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, as the dispatcher works on it."""

    delivery_id: str
    tenant_id: str
    invoice_id: str
    stage_id: str
    stage: str
    channel: str
    recipient: str | None
    attempts: int  # including this claim; the claim's fencing token
    payload: dict[str, Any]
    traceparent: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> "Delivery":
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Sent:
    provider_message_id: str
    sent_at: datetime


@dataclass(frozen=True)
class Failed:
    """Final: no more attempts."""

    error_code: str
    error: str
    permanent: bool


@dataclass(frozen=True)
class Retry:
    """Transient: try again later (the dispatcher turns this into Failed after max_attempts).

    `in_doubt`: the connection timed out or dropped after the message was handed over (DATA), so
    the server may have accepted it: the retry may deliver a second copy (counted as in doubt)."""

    error_code: str
    error: str
    in_doubt: bool = False


Outcome = Sent | Failed | Retry


def reminder_sent(d: Delivery, outcome: Sent) -> dict[str, Any]:
    return new_event("dunning.ReminderSent.v1", {
        "delivery_id": d.delivery_id,
        "stage_id": d.stage_id,
        "invoice_id": d.invoice_id,
        "tenant_id": d.tenant_id,
        "stage": d.stage,
        "channel": d.channel,
        "recipient": d.recipient,
        "provider_message_id": outcome.provider_message_id[:500],
        "sent_at": outcome.sent_at,
    }, source=SOURCE, subject=d.invoice_id, tenant_id=d.tenant_id)


def reminder_failed(d: Delivery, outcome: Failed, failed_at: datetime) -> dict[str, Any]:
    return new_event("dunning.ReminderFailed.v1", {
        "delivery_id": d.delivery_id,
        "stage_id": d.stage_id,
        "invoice_id": d.invoice_id,
        "tenant_id": d.tenant_id,
        "stage": d.stage,
        "channel": d.channel,
        "recipient": d.recipient[:320] if d.recipient else None,
        "error_code": outcome.error_code,
        "error": (outcome.error or outcome.error_code)[:2000],
        "permanent": outcome.permanent,
        "attempts": max(d.attempts, 1),
        "failed_at": failed_at,
    }, source=SOURCE, subject=d.invoice_id, tenant_id=d.tenant_id)
