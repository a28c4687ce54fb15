"""API models of the webhook secrets' rotation API (`/v1/webhook-secrets`)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Processor = Literal["stripe", "gocardless", "standard_webhooks"]


class WebhookSecretIn(BaseModel):
    """A new signing secret for one processor's endpoint; the previous ones stay valid for the overlap."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"processor": "gocardless", "secret": "Vn4h2KbX9qL0rT7cYw3zEe8uPp1sDd6F"}]},
    )

    processor: Processor
    secret: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="As the processor's dashboard shows it (Stripe `whsec_…`, GoCardless any string of 16+ "
        "characters, Standard Webhooks `whsec_<base64>` of 24 to 64 bytes). Omitted: generated, for "
        "Standard Webhooks only.",
    )
    overlap_seconds: int = Field(
        86400, ge=0, le=30 * 86400, description="How long the previous secrets stay valid (default a day)."
    )


class PreviousSecret(BaseModel):
    secret_id: str
    expires_at: str


class WebhookSecretOut(BaseModel):
    secret_id: str = Field(description="`whs_…`")
    processor: Processor
    secret: str = Field(description="Masked (`whsec_…abcd`); in full only in the answer that stored it.")
    status: Literal["active", "expiring", "expired", "revoked"]
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class WebhookSecretCreated(WebhookSecretOut):
    previous: list[PreviousSecret] = Field(description="The processor's earlier secrets, now expiring.")


class WebhookSecretList(BaseModel):
    data: list[WebhookSecretOut]
