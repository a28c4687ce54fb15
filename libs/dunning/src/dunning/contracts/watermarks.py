"""The events of dunning.watermarks.v1: the statements the firing gate relies on, and the scheduler's
word on when it next needs them."""

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


class _StopsWatermark(NamedTuple):
    service: str  # the acknowledging service, e.g. invoice-ingest
    watermark: datetime
    offsets: dict[str, dict[str, int]]  # topic -> partition (text) -> one past the last acknowledged offset
    computed_at: datetime


class StopsWatermark(_StopsWatermark, Contract):
    """A stop-acknowledging service's statement "every stop acknowledged at or before `watermark` is
    on these topics below these offsets" (invoice-ingest: voids, write-offs, holds, disputes,
    promises, payment plans). The scheduler fires a stage only under a usable statement of every
    such service (docs/cancel-guarantee.md#every-stop-under-the-gate)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.StopsWatermark.v1"
    SOURCE: ClassVar[str] = "/invoice-ingest"
    TENANT: ClassVar[str] = "_system"

    @property
    def subject(self) -> str:
        return f"_{self.service}"

    @property
    def tenant(self) -> str:
        return self.TENANT


class _WatermarkWanted(NamedTuple):
    wanted_from: datetime | None  # the earliest stage or deadline the gate does not cover yet; None: none
    computed_at: datetime


class WatermarkWanted(_WatermarkWanted, Contract):
    """The scheduler's word to the acknowledging services: "statements are wanted from `wanted_from`
    on" (nothing it holds is due before; None: nothing pending at all). They then state a few times a
    second only from shortly before it, and now and then otherwise; the statements stay what they
    were, so the gate is as safe as before (docs/cancel-guarantee.md#statements-on-demand)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.WatermarkWanted.v1"
    SOURCE: ClassVar[str] = "/scheduler"
    SUBJECT: ClassVar[str] = "_scheduler"
    TENANT: ClassVar[str] = "_system"

    @property
    def subject(self) -> str:
        return self.SUBJECT

    @property
    def tenant(self) -> str:
        return self.TENANT
