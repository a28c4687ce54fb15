"""The notifier's settings, read once at start-up (env prefix NOTIFIER_, e.g. NOTIFIER_SMTP_HOST)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dunning.settings import CommonSettings


class Settings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    service_name: str = "notifier"
    db_schema: str = "notifier"
    http_port: int = 8003
    consumer_group: str = "notifier"

    # SMTP relay (the dev stack's local server by default).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = Field(15.0, gt=0, description="seconds per SMTP command")
    smtp_local_hostname: str = "localhost"  # sent in EHLO (avoids a DNS lookup of our own name)
    smtp_idle_check_seconds: float = 10.0   # a connection idle longer than this is NOOP-checked first
    mail_from: str = "Accounts Receivable <ar@dunning.localhost>"
    message_id_domain: str = "dunning.invalid"

    # Dispatcher.
    dispatcher_enabled: bool = True
    dispatch_concurrency: int = Field(20, ge=1, le=500)  # sends in flight = worker tasks = SMTP connections
    max_attempts: int = Field(8, ge=1)
    lease_seconds: float = Field(120.0, gt=0)  # must exceed one send's worst case (a few SMTP timeouts)
    poll_seconds: float = Field(0.05, gt=0)
    retry_base_seconds: float = Field(30.0, gt=0)  # backoff: base * 2^(attempt-1), capped, jittered
    retry_max_seconds: float = Field(3600.0, gt=0)
    record_batch_max: int = Field(500, ge=1)
