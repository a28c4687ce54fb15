"""API models for the deliveries endpoints."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

DeliveryState = Literal["pending", "sending", "sent", "failed", "cancelled"]
INVOICE_ID = r"^inv_[0-9A-Za-z]{10,40}$"
DELIVERY_ID = r"^dlv_[0-9A-Za-z]{10,40}$"


class DeliveryOut(BaseModel):
    delivery_id: str
    invoice_id: str
    stage_id: str
    stage: str
    channel: str
    template: str
    recipient: str | None = Field(
        description=(
            "the To address: the one the last attempt used (the customer's contacts current when it was sent),"
            " or, before any attempt has ended, the address in the StageEscalated's customer snapshot"
        )
    )
    cc: list[str] = Field(description="the addresses the last attempt copied (Cc header and envelope)")
    state: DeliveryState = Field(
        description=(
            "pending (waiting for its first attempt, or for a retry after a transient failure), sending (an"
            " attempt in progress), sent, failed (for good), or cancelled: a stop of its invoice (paid, credited,"
            " void, written off, or a hold, dispute, promise or payment plan pausing it) reached the notifier"
            " before the next attempt started. No attempt starts after the notifier has applied the stop; an"
            " attempt in progress at that moment finishes (sent, failed, or cancelled instead of a retry)"
        )
    )
    attempts: int = Field(description="attempts made (or in progress)")
    in_doubt_attempts: int = Field(
        description=(
            "attempts whose outcome was unknown: the worker's lease ran out (it died or stalled, maybe after"
            " the mail server had accepted the message) or the connection was lost after the message was"
            " handed over. The customer may have received this reminder more than once (same Message-ID)"
            " only if this is at least 1"
        )
    )
    last_in_doubt_at: datetime | None = Field(description="when the last in-doubt attempt was taken back")
    next_attempt_at: datetime | None = Field(description="when a pending delivery is tried next")
    provider_message_id: str | None
    last_error_code: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    cancel_reason: str | None = Field(
        None,
        description=(
            "why a cancelled delivery was dropped: the scheduler's reason (invoice_settled, invoice_credited,"
            " invoice_voided, invoice_written_off) or the pause's cause (hold, dispute, promise, payment_plan);"
            " null unless cancelled"
        ),
        examples=["invoice_settled"],
    )
    cancelled_at: datetime | None = Field(None, description="when it was cancelled; null unless cancelled")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as `before` for the next (older) page; null at the end")
