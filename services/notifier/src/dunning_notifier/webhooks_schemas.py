"""API models of the webhook endpoints, messages and attempts (webhooks_api.py)."""

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dunning_notifier.webhooks_catalogue import EVENT_TYPES

ENDPOINT_ID = r"^whe_[0-9A-Za-z]{10,40}$"
MESSAGE_ID = r"^msg_[0-9A-Za-z]{10,40}$"
ATTEMPT_ID = r"^wha_[0-9A-Za-z]{10,40}$"
MessageState = Literal["pending", "sending", "delivered", "failed"]
EVENT_TYPES_DOC = "one or more of: " + ", ".join(f"`{t}`" for t in EVENT_TYPES)


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host, no user info, no fragment, at most 2,048 characters."""
    if len(value) > 2048:
        raise ValueError("at most 2048 characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not have a fragment (#...)")
    if any(c.isspace() for c in value) or port == 0:
        raise ValueError("not a valid URL")
    return value


def check_event_types(value: list[str]) -> list[str]:
    unknown = [t for t in value if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(map(repr, unknown))}; {EVENT_TYPES_DOC}")
    return list(dict.fromkeys(value))


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="where to POST: an http or https URL", examples=["https://erp.example.com/hooks/ar"])
    event_types: list[str] = Field(
        min_length=1, max_length=50, description=EVENT_TYPES_DOC, examples=[["invoice.paid", "payment.received"]]
    )
    description: str = Field("", max_length=500)

    _url = field_validator("url")(check_url)
    _types = field_validator("event_types")(check_event_types)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(examples=["https://erp.example.com/hooks/ar"])] | None = None
    event_types: (
        Annotated[list[str], Field(min_length=1, max_length=50, examples=[["invoice.paid", "payment.received"]])] | None
    ) = Field(None, description=EVENT_TYPES_DOC)
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(
        None,
        description="false disables it; true re-enables one disabled (by you or for failing) and clears its streak",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_event_types(value)


class EndpointOut(BaseModel):
    endpoint_id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="why it is disabled: `disabled_by_tenant`, or `failing: ...` (the sender gave up on it)"
    )
    disabled_at: datetime | None
    consecutive_failures: int = Field(description="messages that failed for good in a row since the last 2xx")
    failing_since: datetime | None = Field(description="the first failed attempt since the last 2xx")
    previous_secret_expires_at: datetime | None = Field(
        description="after a rotation: until when the old secret still signs too (both signatures sent)"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> "EndpointOut":
        data = {k: row[k] for k in row.keys() if k in cls.model_fields}
        return cls(**data, previous_secret_expires_at=row["previous_expires_at"])


class EndpointWithSecret(EndpointOut):
    secret: str = Field(
        description="the signing secret (`whsec_<base64>`), shown only now: keep it to verify `webhook-signature`"
    )


class MessageOut(BaseModel):
    message_id: str = Field(description="also the `webhook-id` header of every attempt")
    endpoint_id: str
    event_type: str
    state: MessageState = Field(
        description="pending (due, or waiting for a retry), sending, delivered (a 2xx), failed (for good)"
    )
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="the body sent: {type, timestamp, data}")


class AttemptOut(BaseModel):
    attempt_id: str
    message_id: str | None = Field(description="the message; null for a `webhook` channel reminder")
    delivery_id: str | None = Field(description="the reminder delivery, for a `webhook` channel reminder")
    trigger: Literal["scheduled", "replay", "reminder"]
    attempted_at: datetime
    status_code: int | None = Field(description="the receiver's status; null when no answer came")
    response_snippet: str | None = Field(description="the first 500 characters of the answer's body")
    duration_ms: int
    error: str | None


class EventTypeOut(BaseModel):
    event_type: str
    description: str
