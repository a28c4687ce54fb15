"""API models (responses; the policy document itself is validated by `policy.parse_policy`)."""

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from dunning_scheduler.policy import DEFAULT_DOCUMENT


class PolicyOut(BaseModel):
    tenant_id: str
    policy_id: str
    version: int = Field(description="Version of the tenant's policy; the built-in default reports 1.")
    source: Literal["tenant", "default"]
    created_at: datetime | None = Field(description="When this version was stored; null for the default.")
    created: bool | None = Field(None, description="PUT only: false when the document equals the active one.")
    policy: dict[str, Any] = Field(description="The normalised document (defaults written out).",
                                   json_schema_extra={"example": DEFAULT_DOCUMENT})


class TimerOut(BaseModel):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    state: Literal["scheduled", "fired", "cancelled", "skipped"]
    fired_at: datetime | None
    cancelled_at: datetime | None
    reason: str | None
    policy_version: int


class InvoiceTimersOut(BaseModel):
    invoice_id: str
    planned: bool = Field(description="False while only a payment is known (InvoiceIssued not seen yet).")
    number: str | None
    currency: str | None
    amount_due: str | None
    balance: str | None
    due_date: date | None
    settled: bool
    settled_at: datetime | None
    policy_id: str | None
    policy_version: int | None
    timers: list[TimerOut]


# The policy document, for the OpenAPI docs (the server validates with `policy.parse_policy`).
POLICY_DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["stages"],
    "properties": {
        "id": {"type": "string", "maxLength": 100, "description": "Shown as DunningPlanned.policy_id."},
        "description": {"type": "string", "maxLength": 500},
        "anchor": {"enum": ["due_date", "issued_at"], "default": "due_date",
                   "description": "due_date: the due date at send_time in the customer's time zone; "
                                  "issued_at: the invoice's issued_at instant."},
        "send_time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "default": "09:00"},
        "stages": {
            "type": "array", "maxItems": 20,
            "description": "In strictly increasing offset order; unique names; at most 50 (stage, channel) pairs.",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "offset"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"},
                    "offset": {"type": "string", "description": "ISO 8601 duration from the anchor; "
                               "a leading '-' is before it: -P3D, P1D, P1M, PT5S."},
                    "template": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$",
                                 "description": "Tone key; defaults to the stage name."},
                    "channels": {"type": "array", "minItems": 1, "uniqueItems": True, "default": ["email"],
                                 "items": {"enum": ["email", "sms", "webhook", "letter"]}},
                },
            },
        },
    },
}
