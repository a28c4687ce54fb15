"""reconciliation settings: read once at start-up, env prefix RECONCILIATION_ (e.g. RECONCILIATION_HTTP_PORT)."""

from pydantic_settings import SettingsConfigDict

from dunning.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="RECONCILIATION_", extra="ignore")

    service_name: str = "reconciliation"
    db_schema: str = "reconciliation"
    http_port: int = 8004

    consumer_group: str = "reconciliation"
    invoices_topic: str = "dunning.invoices.v1"
    # Stripe's default: a signed timestamp more than this far from now is refused (replay window).
    webhook_tolerance_seconds: int = 300
    # Stripe events are a few KB; anything much larger is not one.
    webhook_max_body_bytes: int = 1024 * 1024
    housekeeping_interval_seconds: float = 600.0
    inbox_retention_days: int = 14
