"""The events of dunning.deliveries.v1: what came of each reminder delivery."""

from datetime import datetime
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _ReminderSent(NamedTuple):
    delivery_id: str
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    channel: str
    recipient: str
    provider_message_id: str
    sent_at: datetime
    notice_id: str | None = None  # added later: the stage went out in this consolidated notice


class ReminderSent(_ReminderSent, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ReminderSent.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _ReminderFailed(NamedTuple):
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
    notice_id: str | None = None  # added later: the stage went out in this consolidated notice


class ReminderFailed(_ReminderFailed, Contract):
    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ReminderFailed.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _ReminderCancelled(NamedTuple):
    delivery_id: str
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    channel: str
    # the scheduler's: invoice_settled | invoice_credited | invoice_voided | invoice_written_off
    # | hold | dispute | promise | payment_plan
    reason: str
    cause_event_id: str  # the StagesCancelled or DunningPaused that stopped it
    attempts: int  # attempts made before (0: never tried; more: dropped from its retry backoff)
    cancelled_at: datetime
    notice_id: str | None = None  # added later: the stage went out in this consolidated notice


class ReminderCancelled(_ReminderCancelled, Contract):
    """A delivery dropped before its next attempt because its invoice was stopped or paused: no
    attempt starts after the notifier has applied the stop."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ReminderCancelled.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _NoticeSent(NamedTuple):
    notice_id: str
    tenant_id: str
    customer_id: str
    channel: str
    recipient: str
    provider_message_id: str
    invoice_ids: tuple[str, ...]  # the invoices the notice listed when it went
    left_out: tuple[str, ...]  # the notice's invoices stopped (paid, paused, ...) before it went
    sent_at: datetime


class NoticeSent(_NoticeSent, Contract):
    """A consolidated notice went out (one ReminderSent with its notice_id follows per stage in it)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.NoticeSent.v1"
    SOURCE: ClassVar[str] = "/notifier"

    @property
    def subject(self) -> str:
        return self.customer_id


class _ReminderDeliveryUpdated(NamedTuple):
    delivery_id: str
    stage_id: str
    invoice_id: str
    tenant_id: str
    stage: str
    channel: str
    status: str  # the provider's report after ReminderSent: delivered | undelivered | failed
    provider: str  # twilio
    provider_message_id: str  # the provider's id of the message (Twilio's SM...)
    recipient: str | None
    error_code: str | None  # the provider's error code (Twilio's ErrorCode, e.g. 30003); None when delivered
    reported_at: datetime


class ReminderDeliveryUpdated(_ReminderDeliveryUpdated, Contract):
    """What the provider reported of a reminder it had accepted (ReminderSent): an SMS that did not
    reach the handset (undelivered, failed) is news the invoice's timeline shows."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ReminderDeliveryUpdated.v1"
    SOURCE: ClassVar[str] = "/notifier"
