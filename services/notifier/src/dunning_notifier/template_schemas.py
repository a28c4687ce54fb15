"""Request and response bodies of the templates routes (templates_api.py)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dunning_notifier.schemas import INVOICE_ID
from dunning_notifier.tenant_templates import KEY_PATTERN, LOCALE_PATTERN

Channel = Literal["email", "sms", "letter"]
EXAMPLE_PARTS: dict[str, Any] = {
    "subject": "Invoice {{ invoice.number }} is {{ days_overdue|days }} overdue",
    "text": "Dear {{ customer.name }},\n\nplease pay {{ invoice.balance }}.\n\n{{ brand.signature or sender_name }}\n",
    "html": '{% extends "email/_layout.html.j2" %}{% block body %}<p>Dear {{ customer.name }},</p>{% endblock %}',
}


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"parts": EXAMPLE_PARTS}]})

    parts: dict[str, str] | None = Field(None, description="The channel's parts (Jinja2 source).")
    revert_to: int | None = Field(None, ge=1, description="Instead of parts: save this earlier version again.")


class TemplateOut(BaseModel):
    key: str
    channel: Channel
    locale: str
    source: Literal["tenant", "default"] = Field(description="tenant: the tenant's override; default: shipped.")
    version: int | None = Field(description="The override's version; null for the shipped default.")
    saved_at: datetime | None
    default_name: str | None = Field(None, description="The shipped template's name (source default).")
    parts: dict[str, str]


class VersionOut(BaseModel):
    version: int
    deleted: bool = Field(description="A DELETE: from this version on the shipped default applied.")
    parts: dict[str, str] | None
    saved_at: datetime


class VersionsOut(BaseModel):
    key: str
    channel: Channel
    locale: str
    active_version: int | None
    data: list[VersionOut]


class OverrideOut(BaseModel):
    locale: str
    version: int
    saved_at: datetime


class StageTemplatesOut(BaseModel):
    key: str
    channel: Channel
    shipped: bool = Field(description="A shipped template exists for this key (else `generic` is shipped).")
    overrides: list[OverrideOut] = Field(description="The tenant's templates in force, per locale.")
    default_used: bool = Field(description="No override: every locale gets the shipped default.")


class TemplatesOut(BaseModel):
    data: list[StageTemplatesOut]


class PreviewIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sample": True,
                    "key": "final",
                    "channel": "sms",
                    "locale": "de-AT",
                    "parts": {"text": "{{ invoice.number }}"},
                }
            ]
        },
    )

    key: str | None = Field(
        None, pattern=KEY_PATTERN, description="Stage key; default: the invoice's reminder's.", examples=["final"]
    )
    channel: Channel = "email"
    locale: str | None = Field(
        None, pattern=LOCALE_PATTERN, description="Default: the customer's (sample: en-US).", examples=["de-AT"]
    )
    parts: dict[str, str] | None = Field(None, description="Unsaved parts; without them the tenant's active template.")
    invoice_id: str | None = Field(
        None,
        pattern=INVOICE_ID,
        description="Render with this invoice's last reminder.",
        examples=["inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"],
    )
    sample: bool = Field(False, description="Render with the documented sample invoice and customer.")


class PreviewOut(BaseModel):
    key: str
    channel: Channel
    locale: str
    source: Literal["parts", "tenant", "default"]
    subject: str
    text: str
    html: str
