"""reconciliation settings: read once at start-up, env prefix RECONCILIATION_ (e.g. RECONCILIATION_HTTP_PORT)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dunning.contracts import InvoiceIssued, PaymentReceived, PaymentsWatermark, topic
from dunning.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILIATION_", extra="ignore")

    service_name: str = "reconciliation"
    db_schema: str = "reconciliation"
    http_port: int = 8004

    consumer_group: str = "reconciliation"
    invoices_topic: str = Field(default_factory=lambda: topic(InvoiceIssued))
    payments_topic: str = Field(default_factory=lambda: topic(PaymentReceived))
    # The payments watermark (watermark.py): the scheduler's firing gate. A stage fires at the first
    # statement after its time, so this interval is most of the lateness when all is healthy.
    watermark_enabled: bool = True
    watermarks_topic: str = Field(default_factory=lambda: topic(PaymentsWatermark))
    watermark_interval_seconds: float = 0.25
    # Stripe's default: a signed timestamp more than this far from now is refused (replay window).
    webhook_tolerance_seconds: int = 300
    # Stripe events are a few KB; anything much larger is not one.
    webhook_max_body_bytes: int = 1024 * 1024
    # A bank statement upload (POST /v1/statements): a 20,000-line CAMT.053 is about 14 MB.
    statement_max_body_bytes: int = 20 * 1024 * 1024
