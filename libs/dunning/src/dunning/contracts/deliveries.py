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


class ReminderCancelled(_ReminderCancelled, Contract):
    """A delivery dropped before its next attempt because its invoice was stopped or paused: no
    attempt starts after the notifier has applied the stop."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ReminderCancelled.v1"
    SOURCE: ClassVar[str] = "/notifier"
