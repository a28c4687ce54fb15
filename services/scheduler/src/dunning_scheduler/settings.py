"""Scheduler settings: env prefix SCHEDULER_ (plus the shared DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS)."""

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from dunning.contracts import CustomerUpdated, InvoiceIssued, PaymentReceived, PaymentsWatermark, topic
from dunning.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", extra="ignore")

    service_name: str = "scheduler"
    db_schema: str = "scheduler"
    http_port: int = 8002

    consumer_group: str = "scheduler"
    invoices_topic: str = Field(default_factory=lambda: topic(InvoiceIssued))
    payments_topic: str = Field(default_factory=lambda: topic(PaymentReceived))
    watermarks_topic: str = Field(default_factory=lambda: topic(PaymentsWatermark))
    customers_topic: str = Field(default_factory=lambda: topic(CustomerUpdated))
    consumer_enabled: bool = True

    # Firing loop.
    firing_enabled: bool = True
    fire_batch_size: int = 2000
    # The longest the firing loop sleeps with nothing due sooner: a NOTIFY wakes it for a timer planned
    # due within repository.WAKE_AHEAD_SECONDS (hence the bound) and for each watermark statement.
    fire_poll_seconds: float = Field(1.0, gt=0, le=2.0)
    # Fire only what reconciliation's payments watermark covers (the cancel guarantee). Off only for
    # a deployment without reconciliation, or to test the scheduler alone.
    payments_gate: bool = True
    # The gate (repository.firing._GATE): the services whose watermark statements it requires, comma
    # separated; a stage scheduled at S fires only once every one of them has stated a watermark >= S
    # that this scheduler has caught up with (docs/cancel-guarantee.md#every-stop-under-the-gate).
    gate_sources: Annotated[tuple[str, ...], NoDecode] = ("reconciliation", "invoice-ingest")

    @field_validator("gate_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(s.strip() for s in value.split(",") if s.strip())
        if not value:
            raise ValueError("name at least one service (e.g. reconciliation,invoice-ingest)")
        return value

    # Deadline loop: hold ends, promise and instalment deadlines (the gated ones under the gate).
    deadlines_enabled: bool = True
    deadline_poll_seconds: float = 0.5

    # Replan loop: a policy applied to open invoices (apply_to), batch by batch.
    replans_enabled: bool = True
    replan_batch_size: int = 500
    replan_poll_seconds: float = 5.0
