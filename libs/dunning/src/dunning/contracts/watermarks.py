"""The events of dunning.watermarks.v1: reconciliation's payments watermark."""

from datetime import datetime
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _PaymentsWatermark(NamedTuple):
    watermark: datetime
    payments_topic: str
    payments_offsets: dict[str, int]
    invoices_topic: str
    invoice_positions: dict[str, int]
    computed_at: datetime


class PaymentsWatermark(_PaymentsWatermark, Contract):
    """Reconciliation's heartbeat statement; offsets by partition number as text (the JSON form)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.PaymentsWatermark.v1"
    SOURCE: ClassVar[str] = "/reconciliation"
    SUBJECT: ClassVar[str] = "_payments"
    TENANT: ClassVar[str] = "_system"

    @property
    def subject(self) -> str:
        return self.SUBJECT

    @property
    def tenant(self) -> str:
        return self.TENANT
