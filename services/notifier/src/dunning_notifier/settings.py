"""The notifier's settings, read once at start-up (env prefix NOTIFIER_, e.g. NOTIFIER_SMTP_HOST)."""

from pydantic import Field, SecretStr, model_validator
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

    # Opt-outs, bounces and replies (optouts.py, inbound.py; docs/contact-preferences.md).
    env: str = "production"  # NOTIFIER_ENV: "dev" gives unsubscribe_secret a fixed, public dev value
    # HMAC key of the List-Unsubscribe tokens (at least 32 characters). No default: unset (and not
    # env=dev), reminders go without List-Unsubscribe and the service logs notifier.unsubscribe.
    # not_configured at start; rotating it invalidates the links in mails already sent.
    unsubscribe_secret: SecretStr | None = None
    public_url: str | None = None  # NOTIFIER_PUBLIC_URL: this service's base URL as customers reach it
    inbound_smtp_port: int | None = None  # the inbound SMTP endpoint (replies, DSNs, mailto unsubscribe)
    inbound_smtp_host: str = "127.0.0.1"
    inbound_domain: str = "dunning.localhost"  # of unsubscribe+{token}@, reply+{id}@, bounce+{id}@
    inbound_max_bytes: int = Field(2_000_000, ge=10_000)  # larger inbound messages are refused (552)

    @model_validator(mode="after")
    def _dev_unsubscribe_secret(self) -> "Settings":
        if self.unsubscribe_secret is None and self.env == "dev":
            self.unsubscribe_secret = SecretStr("dev-only-unsubscribe-secret: never use in production")
        return self

    # SMS (sms.py, sms_api.py; docs/channels-sms.md): Twilio's Messages API. Status callbacks and inbound
    # messages come back to public_url + /v1/providers/twilio/{status,inbound}, signed with the auth token.
    sms_api_url: str = "https://api.twilio.com"  # the stand-in's URL in the dev stack
    twilio_account_sid: str | None = None  # AC...; unset: the sms channel fails `channel_not_configured`
    twilio_auth_token: SecretStr | None = None  # HTTP Basic password; the key of X-Twilio-Signature
    sms_from: str = "+15005550006"  # a Twilio number (E.164), or a Messaging Service SID (MG...)
    sms_max_segments: int = Field(4, ge=1, le=10)  # longer texts are cut at a word boundary with an ellipsis
    sms_timeout: float = Field(15.0, gt=0, description="seconds for one create-message request")

    # Letters (letters.py): the print-and-mail provider (Lob's API shape) and the sender's return address.
    printmail_api_url: str | None = None  # e.g. https://api.lob.com (the stand-in's URL in the dev stack)
    printmail_api_key: str | None = None  # HTTP Basic username
    printmail_webhook_secret: str | None = None  # verifies Lob-Signature on tracking events
    printmail_timeout: float = Field(30.0, gt=0, description="seconds for one create-letter request")
    letter_color: bool = False
    letter_double_sided: bool = True
    # Lob prints its own address block: insert_blank_page keeps our first page (window address) as drawn.
    letter_address_placement: str = "insert_blank_page"
    letter_from_name: str = "Accounts Receivable"
    letter_from_address_line1: str = "1 Example Street"
    letter_from_address_line2: str | None = None
    letter_from_city: str = "Springfield"
    letter_from_state: str | None = "IL"  # required by Lob for US addresses
    letter_from_zip: str = "62701"
    letter_from_country: str = "US"
    letter_bank_iban: str | None = None  # bank details printed when the payload's brand has none
    letter_bank_bic: str | None = None
    letter_bank_name: str | None = None
    # A TrueType (glyf) CJK font embedded in letters, e.g. IPAexGothic; unset: the PDF names ReportLab's
    # built-in CID fonts (HeiseiKakuGo-W5...), which the reader or the print shop must supply.
    letter_cjk_font_file: str | None = None

    # Tenant templates and brand (tenant_templates.py, brand.py; docs/templates.md).
    template_cache_seconds: float = Field(2.0, ge=0)  # a saved template or brand applies to sends within this
    brand_logo_max_bytes: int = Field(256 * 1024, ge=1024, le=1024 * 1024)  # an uploaded PNG/SVG logo

    # Dispatcher.
    dispatcher_enabled: bool = True
    dispatch_concurrency: int = Field(20, ge=1, le=500)  # sends in flight = worker tasks = SMTP connections
    max_attempts: int = Field(8, ge=1)
    lease_seconds: float = Field(120.0, gt=0)  # at least 2 * smtp_send_timeout: see _lease_outlasts_sends
    poll_seconds: float = Field(0.05, gt=0)  # the shortest look-again when nothing is claimable
    # The longest: a written delivery or notice wakes the dispatcher at once (due_wakeup.py), a retry
    # or a notice's time is slept until; this only bounds a wake-up lost while LISTEN was down.
    idle_poll_seconds: float = Field(5.0, gt=0)
    retry_base_seconds: float = Field(30.0, gt=0)  # backoff: base * 2^(attempt-1), capped, jittered
    retry_max_seconds: float = Field(3600.0, gt=0)
    record_batch_max: int = Field(500, ge=1)

    # Collections (tasks.py, agency.py): the agency webhook's whole request (connect to answer), well
    # under lease_seconds / 2 like an SMTP send.
    agency_timeout_seconds: float = Field(15.0, gt=0)

    # Outbound webhooks (webhooks*.py; docs/webhooks.md): the sender loop and its retry policy.
    webhooks_enabled: bool = True  # run the sender loop in this process
    webhook_timeout_seconds: float = Field(10.0, gt=0)  # one attempt, connect to the last byte
    webhook_concurrency: int = Field(10, ge=1, le=200)  # attempts in flight per sender step
    webhook_max_attempts: int = Field(8, ge=1)  # automatic attempts per message (a replay starts anew)
    webhook_retry_base_seconds: float = Field(5.0, gt=0)  # base * 2^(attempt-1), capped, jittered
    webhook_retry_max_seconds: float = Field(6 * 3600.0, gt=0)
    webhook_lease_seconds: float = Field(60.0, gt=0)  # more than one step: timeout + the writes
    webhook_poll_seconds: float = Field(1.0, gt=0)  # NOTIFY wakes it sooner
    webhook_disable_after_failures: int = Field(20, ge=1)  # messages failed for good in a row
    webhook_disable_after_seconds: float = Field(5 * 86400.0, gt=0)  # every attempt failing this long
    webhook_secret_overlap_seconds: float = Field(24 * 3600.0, ge=0)  # a rotated secret keeps signing

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
