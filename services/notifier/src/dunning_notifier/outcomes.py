"""What one delivery attempt came to (the events that tell the other services: messages.py).

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

from dunning_notifier import contacts


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, as the dispatcher works on it: addressed (recipient, cc) and with the
    customer in its payload as they are at the claim (contacts.py)."""

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
    cc: tuple[str, ...] = ()  # copied (Cc header and envelope); e-mail only

    @classmethod
    def from_row(cls, row: Any) -> "Delivery":
        """A row of repository.claim_due, with the customer's current contacts applied."""
        payload, recipient, cc = contacts.current(row)
        return cls(
            delivery_id=row["delivery_id"],
            tenant_id=row["tenant_id"],
            invoice_id=row["invoice_id"],
            stage_id=row["stage_id"],
            stage=row["stage"],
            channel=row["channel"],
            recipient=recipient,
            attempts=row["attempts"],
            payload=payload,
            traceparent=row["traceparent"],
            cc=cc,
        )


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
