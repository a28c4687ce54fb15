"""The events of dunning.deliveries.v1: what came of each reminder delivery."""

from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, _instant, _new, instant_text


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "ReminderSent":
        return _new(
            cls,
            (
                d["delivery_id"],
                d["stage_id"],
                d["invoice_id"],
                d["tenant_id"],
                d["stage"],
                d["channel"],
                d["recipient"],
                d["provider_message_id"],
                _instant(d["sent_at"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "stage_id": self.stage_id,
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "stage": self.stage,
            "channel": self.channel,
            "recipient": self.recipient,
            "provider_message_id": self.provider_message_id,
            "sent_at": instant_text(self.sent_at),
        }


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "ReminderFailed":
        return _new(
            cls,
            (
                d["delivery_id"],
                d["stage_id"],
                d["invoice_id"],
                d["tenant_id"],
                d["stage"],
                d["channel"],
                d["recipient"],
                d["error_code"],
                d["error"],
                d["permanent"],
                d["attempts"],
                _instant(d["failed_at"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "stage_id": self.stage_id,
            "invoice_id": self.invoice_id,
            "tenant_id": self.tenant_id,
            "stage": self.stage,
            "channel": self.channel,
            "recipient": self.recipient,
            "error_code": self.error_code,
            "error": self.error,
            "permanent": self.permanent,
            "attempts": self.attempts,
            "failed_at": instant_text(self.failed_at),
        }
