"""The events of dunning.watermarks.v1: reconciliation's payments watermark."""

from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from dunning.contracts.base import Contract, _instant, _new, instant_text


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

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "PaymentsWatermark":
        return _new(
            cls,
            (
                _instant(d["watermark"]),
                d["payments_topic"],
                d["payments_offsets"],
                d["invoices_topic"],
                d["invoice_positions"],
                _instant(d["computed_at"]),
            ),
        )

    def to_data(self) -> dict[str, Any]:
        return {
            "watermark": instant_text(self.watermark),
            "payments_topic": self.payments_topic,
            "payments_offsets": self.payments_offsets,
            "invoices_topic": self.invoices_topic,
            "invoice_positions": self.invoice_positions,
            "computed_at": instant_text(self.computed_at),
        }
