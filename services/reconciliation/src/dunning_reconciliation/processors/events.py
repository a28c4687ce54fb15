"""What a processor's event asks of reconciliation, whichever processor sent it (pure records)."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from dunning_reconciliation.domain import IncomingPayment

# What an event does to a payment (the processor's payment id is the payment's source_reference):
PROCESSING = "processing"  # a debit submitted: pause dunning, count nothing as paid
SUCCEEDED = "succeeded"  # the money arrived: end a processing pause, allocate
FAILED = "failed"  # the debit never arrived: end the pause (or, once counted, reverse it)
REFUND = "refund"  # money sent back: reverse `amount` (None: all that is left)
CHARGEBACK = "chargeback"  # a chargeback (GoCardless: final): reverse all that is left
LATE_FAILURE = "late_failure"  # a debit that failed after it was counted: reverse all that is left
DISPUTE_OPENED = "dispute_opened"  # a card payment disputed: pause dunning
DISPUTE_CLOSED = "dispute_closed"  # won: the pause ends; lost: the pause ends and the money is reversed
IGNORED = "ignored"  # recorded, nothing else (another resource, an action we do not act on)


class EventError(ValueError):
    """A delivery we cannot read; names the offending field (`events.0.resource_metadata.amount`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SignatureError(ValueError):
    """The delivery is refused (not signed with an active secret, or stale); safe to show the caller."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ProcessorEvent:
    processor: str  # gocardless | standard_webhooks (also the payment's source)
    event_id: str  # GoCardless EV…, Standard Webhooks webhook-id
    type: str  # as the processor names it: payments.confirmed, payment.succeeded
    action: str  # one of the actions above
    payment_reference: str | None  # the processor's payment id (PM…, data.id)
    occurred_at: datetime  # UTC
    payment: IncomingPayment | None = None  # what is known of the payment's money and invoice
    amount: Decimal | None = None  # a refund's amount (None: all that is left)
    reference: str | None = None  # a refund's or a dispute's id
    outcome: str | None = None  # dispute_closed: won | lost
    reason: str | None = None  # why ignored, or the processor's cause
