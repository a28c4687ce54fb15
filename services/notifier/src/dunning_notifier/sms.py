"""The SMS channel: Twilio's Messages API (`channels.PROVIDERS["sms"]`).

Each delivery is one `POST {sms_api_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic
(AccountSid, AuthToken), form-encoded `To` (the customer's phone, E.164), `From` (or
`MessagingServiceSid` when `sms_from` is an MG... SID), `Body` (the `sms` templates, cut to
`sms_max_segments`: sms_text.py) and `StatusCallback` (public_url + /v1/providers/twilio/status, where
sms_api.py records what Twilio says of the message later). 201 with the message's `sid` (SM...) is
Sent; the message is kept with its encoding and segments (sms_repository.accepted).

Outcomes:
- no phone, or not a valid E.164 number -> Failed("invalid_recipient"); a template that cannot be
  rendered -> Failed("template_error"); no account configured -> Failed("channel_not_configured");
- Twilio's error JSON (`{"code", "message", "more_info", "status"}`): 21211 invalid To, 21614 not a
  mobile number, 21612 / 21408 cannot route / region not enabled, 21610 the recipient replied STOP,
  21617 too long, any other 400/404 -> Failed("twilio_<code>"), permanent (21610 also records the
  customer's SMS opt-out: optouts.record_opt_out, as an inbound STOP does);
- 401/403 (our credentials: configuration), 429 / 20429 (rate), 5xx -> Retry("twilio_<code or status>");
- cannot connect -> Retry("twilio_connect"); a timeout or a dropped connection once the request was
  sent -> Retry("twilio_timeout", in_doubt=True): Twilio may have queued the message (the Messages
  API takes no idempotency key, so the retry may send a second copy; counted as in doubt).
"""

import asyncio
import re
from typing import Any

import asyncpg
import httpx
import phonenumbers

from dunning.clock import utcnow
from dunning.db import create_pool
from dunning.logging import get_logger
from dunning_notifier import sms_repository as sms_repo
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.rendering import Renderer, RenderError
from dunning_notifier.settings import Settings
from dunning_notifier.sms_text import SmsText, fit
from dunning_notifier.tenant_templates import TemplatesUnavailable

log = get_logger(__name__)
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
STATUS_PATH = "/v1/providers/twilio/status"
INBOUND_PATH = "/v1/providers/twilio/inbound"
# Twilio error codes a retry cannot help (the number, the route or the content is refused).
PERMANENT_CODES = frozenset({21211, 21214, 21408, 21602, 21604, 21606, 21610, 21612, 21614, 21617, 21659, 30003})
UNSUBSCRIBED = 21610  # the recipient replied STOP to this sender: Twilio blocks it until START
TRANSIENT_CODES = frozenset({20003, 20005, 20429, 30001, 30500})


def valid_phone(number: str | None) -> bool:
    """E.164 and a number libphonenumber knows as valid."""
    if not number or not E164.fullmatch(number):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def messages_path(account_sid: str) -> str:
    return f"/2010-04-01/Accounts/{account_sid}/Messages.json"


class SmsChannel:
    """The `sms` provider. `pool`: the notifier's, where bootstrap passes it; else a small pool of its
    own on first use (the PROVIDERS factory gets settings and renderer only)."""

    name = "sms"

    def __init__(self, settings: Settings, renderer: Renderer, pool: asyncpg.Pool | None = None):
        self.settings = settings
        self.renderer = renderer
        self._pool = pool
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    def open_session(self) -> "SmsSession":
        return SmsSession(self)

    def client(self) -> httpx.AsyncClient:
        """The channel's one HTTP client (keep-alive to Twilio), shared by every dispatcher worker: a
        client each cost ~1 MB and a TLS context built from the CA store (~13 ms of CPU)."""
        if self._client is None:
            s = self.settings
            token = s.twilio_auth_token.get_secret_value() if s.twilio_auth_token else ""
            self._client = httpx.AsyncClient(
                base_url=s.sms_api_url,
                auth=httpx.BasicAuth(s.twilio_account_sid or "", token),
                timeout=httpx.Timeout(s.sms_timeout, connect=min(10.0, s.sms_timeout)),
                headers={"Accept": "application/json"},
                limits=httpx.Limits(max_connections=s.dispatch_concurrency),
            )
        return self._client

    async def pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(
                    self.settings.database_url, self.settings.db_schema, min_size=1, max_size=2
                )
            return self._pool

    def form(self, to: str, text: SmsText) -> dict[str, str]:
        s = self.settings
        sender = {"MessagingServiceSid": s.sms_from} if s.sms_from.startswith("MG") else {"From": s.sms_from}
        form = {"To": to, **sender, "Body": text.text}
        if s.public_url:
            form["StatusCallback"] = s.public_url.rstrip("/") + STATUS_PATH
        return form

    def text_of(self, d: Delivery) -> SmsText:
        """The rendered text, cut to sms_max_segments. Raises RenderError."""
        rendered = self.renderer.render(d.payload, channel="sms")
        text = " ".join(rendered.text.split())  # one paragraph: line breaks cost as much as letters
        if not text:
            raise RenderError("the sms template rendered no text")
        return fit(text, self.settings.sms_max_segments)


class SmsSession:
    """One dispatcher worker's sender, on the channel's shared client."""

    def __init__(self, channel: SmsChannel):
        self.channel = channel

    async def close(self) -> None:  # the channel's client and pool are shared by every worker
        return None

    async def send(self, d: Delivery) -> Outcome:
        ch, s = self.channel, self.channel.settings
        if not s.twilio_account_sid or s.twilio_auth_token is None:
            return Failed(
                "channel_not_configured", "NOTIFIER_TWILIO_ACCOUNT_SID or _AUTH_TOKEN is not set", permanent=True
            )
        if not valid_phone(d.recipient):
            why = "the customer has no phone number" if not d.recipient else f"not an E.164 number: {d.recipient!r}"
            return Failed("invalid_recipient", why, permanent=True)
        assert d.recipient is not None
        try:  # the tenant's own templates and brand, loaded before the (sync) render: tenant_templates.py
            await ch.renderer.prepare(d.tenant_id)
        except TemplatesUnavailable as exc:
            return Retry("templates_unavailable", str(exc))
        try:
            text = ch.text_of(d)
        except RenderError as exc:
            return Failed("template_error", str(exc), permanent=True)
        try:
            response = await ch.client().post(messages_path(s.twilio_account_sid), data=ch.form(d.recipient, text))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return Retry("twilio_connect", f"{type(exc).__name__}: {exc}")
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            return Retry("twilio_timeout", f"{type(exc).__name__}: {exc}", in_doubt=True)
        except httpx.HTTPError as exc:
            return Retry("twilio_connect", f"{type(exc).__name__}: {exc}")
        return await self._outcome(d, text, response)

    async def _opted_out(self, d: Delivery) -> None:
        """Twilio refuses the number because it replied STOP to our sender: record the opt-out, so that
        the customer's later stages skip SMS (ContactOptedOut) as after an inbound STOP."""
        from dunning_notifier import optouts  # optouts -> handlers -> ... -> channels -> this module

        customer_id = (d.payload.get("customer") or {}).get("customer_id")
        if not customer_id or not d.recipient:
            return
        async with (await self.channel.pool()).acquire() as conn, conn.transaction():
            await optouts.record_opt_out(conn, d.tenant_id, str(customer_id), "sms", d.recipient, "sms")

    async def _outcome(self, d: Delivery, text: SmsText, response: httpx.Response) -> Outcome:
        status = response.status_code
        if status in (200, 201):
            try:
                body = response.json()
                sid = str(body["sid"])
            except (ValueError, KeyError, TypeError) as exc:
                return Retry("twilio_bad_response", f"{status} without a message sid: {exc}", in_doubt=True)
            await sms_repo.accepted(
                await self.channel.pool(),
                message_sid=sid,
                delivery_id=d.delivery_id,
                tenant_id=d.tenant_id,
                to=str(d.recipient),
                text=text,
                status=str(body.get("status") or "queued"),
            )
            log.info(
                "notifier.sms.accepted",
                message_sid=sid,
                segments=text.segments,
                encoding=text.encoding,
                truncated=text.truncated,
            )
            return Sent(provider_message_id=sid, sent_at=utcnow())
        code, message = _error(response)
        if code == UNSUBSCRIBED:
            await self._opted_out(d)
        if status == 429 or status >= 500 or code in TRANSIENT_CODES or status in (401, 403):
            return Retry(f"twilio_{code or status}", f"{status} {message}")
        if code in PERMANENT_CODES or 400 <= status < 500:
            return Failed(f"twilio_{code or status}", f"{status} {message}", permanent=True)
        return Retry(f"twilio_{code or status}", f"{status} {message}")


def _error(response: httpx.Response) -> tuple[int | None, str]:
    """Twilio's error JSON: (code, message); (None, the body's start) for anything else."""
    try:
        body: Any = response.json()
        code = body.get("code")
        return (int(code) if code is not None else None), str(body.get("message") or "")[:500]
    except (ValueError, AttributeError, TypeError):
        return None, response.text[:200]
