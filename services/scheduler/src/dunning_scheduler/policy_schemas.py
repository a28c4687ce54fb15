"""API models of named policies, segment rules, tenant settings, customer windows and the preview
(the documents themselves are validated by `policy`, `segments` and `tenant_settings`)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field

from dunning_scheduler.schemas import PolicyOut
from dunning_scheduler.segments import SegmentRulesDocument
from dunning_scheduler.tenant_settings import SendWindowDocument, TenantSettingsDocument

Actor = Annotated[
    str | None,
    Header(
        alias="Dunning-Actor",
        max_length=200,
        description='Who makes the change, recorded as `changed_by` (default "api").',
    ),
]


def actor_of(actor: str | None) -> str:
    return (actor or "").strip() or "api"


class PoliciesOut(BaseModel):
    policies: list[PolicyOut] = Field(description="Each named policy's latest version, by id.")


class PolicyVersionsOut(BaseModel):
    policy_id: str
    versions: list[PolicyOut] = Field(description="Every version, newest first.")


class Versioned(BaseModel):
    tenant_id: str
    version: int = Field(description="0: nothing stored yet (the defaults).")
    changed_by: str | None = Field(description='Who stored this version (the `Dunning-Actor` header, else "api").')
    created_at: datetime | None
    created: bool | None = Field(None, description="PUT only: false when the document equals the one in force.")


class SettingsOut(Versioned):
    settings: TenantSettingsDocument = Field(description="The normalised document (defaults written out).")


class RulesOut(Versioned):
    rules: SegmentRulesDocument = Field(description="The normalised rules.")


class CustomerWindowOut(BaseModel):
    tenant_id: str
    customer_id: str
    send_window: SendWindowDocument | None = Field(description="null: the customer has none (the tenant's applies).")
    changed_by: str | None
    updated_at: datetime | None


# -- preview ---------------------------------------------------------------------------------------


class PreviewCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str | None = Field(None, description="A known customer: its payment history and contacts count.")
    timezone: str = "UTC"
    locale: str = "en-GB"
    country: str | None = None
    subdivision: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, str] | None = None


class PreviewInvoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = Field(max_length=100, description="Your name for the sample, echoed in the answer.")
    number: str = "PREVIEW"
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    amount_due: str = Field(pattern=r"^[0-9]+(\.[0-9]{1,4})?$")
    issue_date: str | None = None
    due_date: str
    customer: PreviewCustomer = PreviewCustomer()


PREVIEW_EXAMPLE: dict[str, Any] = {
    "policy": {
        "id": "pol_b2b",
        "days": "business",
        "stages": [
            {"name": "soft", "offset": "P5D"},
            {"name": "final", "offset": "P15D", "late_fee": {"EUR": "40.00"}},
        ],
    },
    "settings": {
        "calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri"], "holidays": "customer"},
        "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00"},
    },
    "invoices": [
        {
            "reference": "sample-1",
            "number": "INV-1",
            "currency": "EUR",
            "amount_due": "1200.00",
            "issue_date": "2026-11-20",
            "due_date": "2026-12-20",
            "customer": {"timezone": "Europe/Berlin", "locale": "de-DE", "country": "DE", "subdivision": "BY"},
        }
    ],
    "now": "2026-12-01T00:00:00Z",
}


class PreviewDeferral(BaseModel):
    reason: str = Field(description="send_window | contact_cap | quiet_period")
    detail: str | None
    from_: datetime = Field(alias="from")
    to: datetime

    model_config = ConfigDict(populate_by_name=True)


class PreviewStage(BaseModel):
    stage: str
    sequence: int
    channel: str
    template: str
    state: Literal["scheduled", "skipped", "cancelled"]
    reason: str | None
    scheduled_at: datetime = Field(description="UTC; when it would be sent (after deferrals).")
    local_time: str = Field(description="ISO 8601 with the customer's zone offset.")
    timezone: str
    moved: str | None = Field(description="Why planning moved it (calendar, window), in words.")
    deferred: list[PreviewDeferral] = Field(description="Why firing would hold it back, each time.")
    notice: str | None = Field(description="The consolidated notice it would go in (ntc-preview-N).")
    late_fee: str | None
    interest: str | None
    total_due: str | None


class PreviewedInvoice(BaseModel):
    invoice_id: str | None = None
    reference: str | None = None
    policy_id: str
    policy_version: int
    segment: dict[str, str] | None
    stages: list[PreviewStage]


class PreviewNotice(BaseModel):
    notice: str
    customer: str
    channel: str
    at: datetime
    invoices: list[str]


PREVIEW_ANSWER_EXAMPLE: dict[str, Any] = {
    "invoices": [
        {
            "reference": "sample-1",
            "policy_id": "pol_b2b",
            "policy_version": 0,
            "segment": None,
            "stages": [
                {
                    "stage": "soft",
                    "sequence": 0,
                    "channel": "email",
                    "template": "soft",
                    "state": "scheduled",
                    "reason": None,
                    "scheduled_at": "2026-12-28T08:23:41Z",
                    "local_time": "2026-12-28T09:23:41+01:00",
                    "timezone": "Europe/Berlin",
                    "moved": "2026-12-25 is Christmas Day (DE): moved to the next working day",
                    "deferred": [],
                    "notice": None,
                    "late_fee": "0.00",
                    "interest": "0.00",
                    "total_due": "1200.00",
                }
            ],
        }
    ],
    "notices": [],
}


class PreviewOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [PREVIEW_ANSWER_EXAMPLE]})

    invoices: list[PreviewedInvoice]
    notices: list[PreviewNotice]
