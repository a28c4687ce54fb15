"""The notifier's settings, read once at start-up (env prefix NOTIFIER_, e.g. NOTIFIER_SMTP_HOST)."""

from pydantic import Field, model_validator
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
    # One whole send, connect to the last reply; default 3 * smtp_timeout, at most lease_seconds / 2.
    smtp_send_timeout: float | None = Field(None, gt=0)
    smtp_local_hostname: str = "localhost"  # sent in EHLO (avoids a DNS lookup of our own name)
    smtp_idle_check_seconds: float = 10.0  # a connection idle longer than this is NOOP-checked first
    mail_from: str = "Accounts Receivable <ar@dunning.localhost>"
    message_id_domain: str = "dunning.invalid"

    # Dispatcher.
    dispatcher_enabled: bool = True
    dispatch_concurrency: int = Field(20, ge=1, le=500)  # sends in flight = worker tasks = SMTP connections
    max_attempts: int = Field(8, ge=1)
    lease_seconds: float = Field(120.0, gt=0)  # at least 2 * smtp_send_timeout: see _lease_outlasts_sends
    poll_seconds: float = Field(0.05, gt=0)
    retry_base_seconds: float = Field(30.0, gt=0)  # backoff: base * 2^(attempt-1), capped, jittered
    retry_max_seconds: float = Field(3600.0, gt=0)
    record_batch_max: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _lease_outlasts_sends(self) -> "Settings":
        """A live worker must never see its lease run out, or a slow send is taken back and sent
        again (in doubt) although nothing crashed. A claimed row waits in the dispatcher's queue
        behind at most one send per worker (it claims twice as many rows as it has workers), then
        takes its own send; each send is cut off at smtp_send_timeout. So the lease must cover two
        of them, with the batch write after; then only a real stall (a frozen process, a lost
        database) outlives it. Unset, the send timeout is derived to fit the lease."""
        if self.smtp_send_timeout is None:
            self.smtp_send_timeout = min(3 * self.smtp_timeout, self.lease_seconds / 2)
        elif self.lease_seconds < 2 * self.smtp_send_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must be at least 2 * smtp_send_timeout"
                f" ({2 * self.smtp_send_timeout}): a claim waits for one send and then makes one"
            )
        return self
