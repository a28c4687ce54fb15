"""invoice-ingest settings: read once at start-up, env prefix INGEST_ (e.g. INGEST_HTTP_PORT)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dunning.contracts import CustomerUpdated, InvoiceIssued, StopsWatermark, topic
from dunning.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    service_name: str = "invoice-ingest"
    db_schema: str = "ingest"
    http_port: int = 8001

    consumer_group: str = "invoice-ingest"
    # Idempotency-Key results are kept this long (Stripe: 24 h).
    idempotency_ttl_hours: int = 24
    # A key whose first request has been "in flight" this long is taken to be abandoned (the process
    # died mid-request) and may be claimed again by a request with the same body.
    idempotency_stale_seconds: int = 60
    bulk_max_items: int = 10_000
    bulk_max_bytes: int = 64 * 1024 * 1024
    # The stops watermark (watermark.py): the scheduler fires a stage only under a statement of ours at
    # or after its time, so this interval adds to the lateness like reconciliation's. The topics are
    # those ingest writes stops to (the catalogue's; tests may point the statement at their own).
    watermark_enabled: bool = True
    watermarks_topic: str = Field(default_factory=lambda: topic(StopsWatermark))
    watermark_interval_seconds: float = 0.25
    invoices_topic: str = Field(default_factory=lambda: topic(InvoiceIssued))
    customers_topic: str = Field(default_factory=lambda: topic(CustomerUpdated))
