"""API models for the deliveries and notices endpoints."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

DeliveryState = Literal["pending", "sending", "sent", "failed", "cancelled"]
INVOICE_ID = r"^inv_[0-9A-Za-z]{10,40}$"
DELIVERY_ID = r"^dlv_[0-9A-Za-z]{10,40}$"
NOTICE_ID = r"^ntc_[0-9A-Za-z]{10,40}$"


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
    fallback_of: str | None = Field(
        None,
        description="the delivery of the same stage this one stands in for: that one's address was opted out,"
        " invalid or bounced, so the stage went on the tenant's next channel (optouts.py)",
    )
    provider_status: str | None = Field(
        None, description="what the provider reported after accepting it, e.g. `bounced` (a DSN came back)"
    )
    provider_status_at: datetime | None = Field(
        None, description="when the provider last moved provider_status (an SMS: queued, sent, delivered, undelivered)"
    )
    sms_encoding: Literal["GSM-7", "UCS-2"] | None = Field(
        None, description="an SMS: the encoding its text went in (GSM 03.38 7-bit, or UCS-2 for any other character)"
    )
    sms_segments: int | None = Field(
        None, description="an SMS: how many messages it went as (160/153 GSM-7 characters, 70/67 UCS-2 each)"
    )


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as `before` for the next (older) page; null at the end")


class NoticeItemOut(BaseModel):
    invoice_id: str
    stage_id: str | None = Field(description="the stage that fires in this notice; null: listed as overdue only")
    stage: str | None
    left_out: bool = Field(description="a stop of the invoice reached the notifier before the notice went")
    stop_reason: str | None = Field(
        description="the stop that left it out (invoice_settled, ..., hold, dispute, promise, payment_plan)",
        examples=["invoice_settled"],
    )
    outcome: Literal["sent", "failed", "cancelled"] | None = Field(
        description="a stage item's Reminder* event: sent or failed with the notice, or cancelled (left out)"
    )


class NoticeOut(BaseModel):
    """A consolidated notice (NoticeComposed): one message listing a customer's overdue invoices."""

    notice_id: str = Field(examples=["ntc_01KJ4N6Q8S0U2W4Y6A8C0E2G4J"])
    delivery_id: str = Field(description="its delivery id: the Message-ID's local part, and the Reminder* events'")
    customer_id: str
    channel: str
    composed_at: datetime
    state: DeliveryState = Field(
        description=(
            "as a delivery's; cancelled: every invoice with a stage in it was stopped (paid, credited, void,"
            " written off, or paused) before it went, so nothing was sent"
        )
    )
    recipient: str | None
    cc: list[str]
    attempts: int
    in_doubt_attempts: int
    next_attempt_at: datetime | None
    provider_message_id: str | None
    last_error_code: str | None
    last_error: str | None
    sent_at: datetime | None
    invoice_ids: list[str] | None = Field(description="sent: the invoices the notice listed when it went")
    left_out: list[str] | None = Field(description="sent: the notice's invoices stopped before it went")
    cancel_reason: str | None = Field(description="cancelled: the stop that left it without a stage")
    cancelled_at: datetime | None
    items: list[NoticeItemOut] = Field(description="the notice's invoices in its order, each with what became of it")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "notice_id": "ntc_01KJ4N6Q8S0U2W4Y6A8C0E2G4J",
                    "delivery_id": "dlv_01KJ4N7A2C4E6G8J0L2N4Q6S8U",
                    "customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V",
                    "channel": "email",
                    "composed_at": "2026-03-02T08:00:00.412Z",
                    "state": "sent",
                    "recipient": "ap@brandt-soehne.de",
                    "cc": [],
                    "attempts": 2,
                    "in_doubt_attempts": 0,
                    "next_attempt_at": None,
                    "provider_message_id": "q42",
                    "last_error_code": None,
                    "last_error": None,
                    "sent_at": "2026-03-02T08:00:41.030Z",
                    "invoice_ids": ["inv_01KG3M5P7R9T1V3X5Z7B9D1F3H", "inv_01KF1A3C5E7G9J1L3N5Q7S9U1W"],
                    "left_out": ["inv_01KG8Q2S4U6W8Y0A2C4E6G8J0K"],
                    "cancel_reason": None,
                    "cancelled_at": None,
                    "items": [
                        {
                            "invoice_id": "inv_01KG3M5P7R9T1V3X5Z7B9D1F3H",
                            "stage_id": "stg_01KG3M5Q1B3D5F7H9K1M3P5R7T",
                            "stage": "firm",
                            "left_out": False,
                            "stop_reason": None,
                            "outcome": "sent",
                        },
                        {
                            "invoice_id": "inv_01KG8Q2S4U6W8Y0A2C4E6G8J0K",
                            "stage_id": "stg_01KG8Q2T3V5X7Z9B1D3F5H7K9M",
                            "stage": "soft",
                            "left_out": True,
                            "stop_reason": "invoice_settled",
                            "outcome": "cancelled",
                        },
                        {
                            "invoice_id": "inv_01KF1A3C5E7G9J1L3N5Q7S9U1W",
                            "stage_id": None,
                            "stage": None,
                            "left_out": False,
                            "stop_reason": None,
                            "outcome": None,
                        },
                    ],
                }
            ]
        }
    }
