"""Delivery channels: a registry from channel name to provider, and the e-mail provider (SMTP).

Every channel a policy names has a provider: email (here), sms (sms.py: Twilio), letter (letters.py:
print and mail), webhook (webhooks_channel.py: reminder.due), call (tasks.py: a collector's task) and
agency (agency.py: the hand-off). A delivery on a channel without one fails permanently with
error_code `channel_not_configured`; adding a provider is one entry in PROVIDERS: a factory
`(settings, renderer[, pool]) -> Channel` whose sessions return an Outcome.

E-mail: each dispatcher worker task keeps one SMTP connection open (aiosmtplib) and sends on it
message after message; a connection that failed is dropped and the next send reconnects, and one
idle for a while is checked with NOOP before use. A whole send (connect to the last reply) is cut off
at `smtp_send_timeout`, so that a claim's lease (at least twice that) outlives any live send.
Each message goes To the primary address and Cc the copies (both on the envelope); it counts as sent
when the server accepts at least one of them (the refused ones are logged). Failures are classified:
- transient (Retry): connection refused or dropped, timeouts, any 4xx reply, authentication,
  EHLO/STARTTLS or sender (MAIL FROM) refusals (the relay's or our configuration's fault, not the
  message's: fixing the configuration lets the retries through);
- permanent (Failed): a 5xx reply to RCPT (e.g. 550 unknown user), to MAIL or DATA (the message
  was refused), an address that cannot be sent, a template that cannot be rendered.
A timeout or a dropped connection once the DATA command has begun is a Retry marked `in_doubt`: the
server may have accepted the message, and the retry may deliver a second copy (same Message-ID).
"""

import asyncio
import contextlib
import dataclasses
import inspect
import re
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime, parseaddr
from typing import Any, Protocol

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from dunning.clock import isoformat, utcnow
from dunning.logging import get_logger
from dunning_notifier import optouts
from dunning_notifier.agency import AgencyChannel
from dunning_notifier.letters import LetterChannel
from dunning_notifier.mime import address_header, cc_header, compose, header_value
from dunning_notifier.outcomes import Delivery, Failed, Outcome, Retry, Sent
from dunning_notifier.rendering import RenderedEmail, Renderer, RenderError
from dunning_notifier.settings import Settings
from dunning_notifier.sms import SmsChannel
from dunning_notifier.tasks import CallChannel
from dunning_notifier.tenant_templates import TemplatesUnavailable
from dunning_notifier.webhooks_channel import WebhookChannel

log = get_logger(__name__)
_QUEUED_AS = re.compile(r"queued as\s+(\S+)", re.IGNORECASE)


class ChannelSession(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...
    async def close(self) -> None: ...


class Channel(Protocol):
    name: str

    def open_session(self) -> ChannelSession: ...


def message_id(delivery_id: str, domain: str) -> str:
    """Deterministic per delivery: a duplicate sent in the at-least-once window is identifiable."""
    return f"<{delivery_id}@{domain}>"


def scheduled_at(payload: dict) -> str | None:
    """The stage's planned instant (StageEscalated `scheduled_at`) as ISO 8601 UTC with a Z, as the
    scheduler writes it; None if the payload has none that parses (the header is then left out)."""
    value = payload.get("scheduled_at")
    try:
        return isoformat(datetime.fromisoformat(value)) if isinstance(value, str) else None
    except ValueError:
        return None


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings, renderer: Renderer):
        self.settings = settings
        self.renderer = renderer
        sender_name, self.envelope_from = parseaddr(settings.mail_from)
        self.envelope_from = self.envelope_from or settings.mail_from
        self.header_from = address_header(sender_name, self.envelope_from, "From")

    def open_session(self) -> "SmtpSession":
        return SmtpSession(self)

    def _from_header(self, tenant_id: str) -> str:
        """The tenant's brand's sender name on our envelope address (brand.py), else NOTIFIER_MAIL_FROM's."""
        name = self.renderer.brand_for(tenant_id)["sender_name"]
        return address_header(name, self.envelope_from, "From") if name else self.header_from

    def build(self, d: Delivery, rendered: RenderedEmail) -> tuple[bytes, str, bool]:
        """The RFC 5322 message (multipart/alternative: text + HTML), its Message-ID, and whether
        it needs SMTPUTF8 (a non-ASCII address). To is the primary address with the customer's name,
        Cc the copies. Raises ValueError for an unsendable address."""
        recipient = d.recipient or ""
        for address in (recipient, *d.cc):
            _check_address(address)
        name = str((d.payload.get("customer") or {}).get("name") or "")
        msg_id = message_id(d.delivery_id, self.settings.message_id_domain)
        headers = [
            ("From", self._from_header(d.tenant_id)),
            *_reply_to(self.renderer.brand_for(d.tenant_id)),  # the brand's; else optouts may add one
            ("To", address_header(name, recipient)),
            *([("Cc", cc_header(d.cc))] if d.cc else []),
            ("Subject", header_value(rendered.subject, "Subject")),
            ("Date", format_datetime(utcnow())),
            ("Message-ID", msg_id),
            ("Auto-Submitted", "auto-generated"),  # RFC 3834: auto-responders should not answer
            ("X-Dunning-Tenant-Id", header_value(d.tenant_id, "X-Dunning-Tenant-Id")),
            *_subject_headers(d),
            ("X-Dunning-Channel", header_value(d.channel, "X-Dunning-Channel")),
            ("X-Dunning-Delivery-Id", header_value(d.delivery_id, "X-Dunning-Delivery-Id")),
        ]
        planned = scheduled_at(d.payload)
        if planned is not None:
            headers.append(("X-Dunning-Scheduled-At", planned))
        headers += optouts.list_unsubscribe_headers(d, self.settings, headers)  # RFC 8058, Reply-To for replies
        raw = compose(headers, rendered.text, rendered.html, boundary=f"=_{d.delivery_id}")
        return raw, msg_id, not all(address.isascii() for address in (recipient, *d.cc))


def _reply_to(brand: dict) -> list[tuple[str, str]]:
    return [("Reply-To", address_header("", brand["reply_to"], "Reply-To"))] if brand.get("reply_to") else []


def _subject_headers(d: Delivery) -> list[tuple[str, str]]:
    """What the message is about: the invoice and stage of a reminder; the notice, its customer and
    the invoices it lists (`, `-separated, folded) of a consolidated notice (notice_sender.py)."""
    notice_id = d.payload.get("notice_id")
    if notice_id is None:
        return [
            ("X-Dunning-Invoice-Id", header_value(d.invoice_id, "X-Dunning-Invoice-Id")),
            ("X-Dunning-Stage", header_value(d.stage, "X-Dunning-Stage")),
            ("X-Dunning-Stage-Id", header_value(d.stage_id, "X-Dunning-Stage-Id")),
        ]
    return [
        ("X-Dunning-Notice-Id", header_value(str(notice_id), "X-Dunning-Notice-Id")),
        ("X-Dunning-Customer-Id", header_value(str(d.payload.get("customer_id")), "X-Dunning-Customer-Id")),
        ("X-Dunning-Invoice-Ids", header_value(", ".join(d.invoice_id.split(",")), "X-Dunning-Invoice-Ids")),
    ]


def _check_address(address: str) -> None:
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c in address for c in ' \r\n<>,;"'):
        raise ValueError(f"not an e-mail address: {address!r}")


class _Smtp(aiosmtplib.SMTP):
    """aiosmtplib's client, noting when a send reaches DATA: from then on a timeout or a dropped
    connection leaves the outcome unknown (the server may have accepted the message)."""

    handed_over = False

    async def data(self, *args, **kwargs):
        self.handed_over = True
        return await super().data(*args, **kwargs)


class SmtpSession:
    """One worker's SMTP connection, reused across messages and reopened after a failure."""

    def __init__(self, channel: EmailChannel):
        self.channel = channel
        self.settings = channel.settings
        self._client: _Smtp | None = None
        self._last_used = 0.0

    async def _connected(self) -> _Smtp:
        s = self.settings
        client = self._client
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used < s.smtp_idle_check_seconds:
                return client
            try:  # idle for a while: the relay may have dropped us; find out before sending
                await client.noop()
                return client
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                await self.close()
        client = _Smtp(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password,
            local_hostname=s.smtp_local_hostname,
        )
        await client.connect()
        self._client = client
        return client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.quit(), timeout=2)
        except Exception:
            with contextlib.suppress(Exception):
                client.close()

    async def send(self, d: Delivery) -> Outcome:
        if not d.recipient:
            return Failed("invalid_recipient", "the customer has no e-mail address", permanent=True)
        try:  # the tenant's own templates and brand, loaded before the (sync) render: tenant_templates.py
            await self.channel.renderer.prepare(d.tenant_id)
        except TemplatesUnavailable as exc:
            return Retry("templates_unavailable", str(exc))
        try:
            rendered = self.channel.renderer.render(d.payload)
        except RenderError as exc:
            return Failed("template_error", str(exc), permanent=True)
        try:
            raw, msg_id, utf8 = self.channel.build(d, rendered)
        except (ValueError, TypeError, IndexError) as exc:
            return Failed("invalid_recipient", f"cannot address {d.recipient!r}: {exc}", permanent=True)
        client: _Smtp | None = None
        try:
            async with asyncio.timeout(self.settings.smtp_send_timeout):
                client = await self._connected()
                client.handed_over = False
                refused, response = await client.sendmail(
                    optouts.envelope_from(d, self.settings) or self.channel.envelope_from,  # VERP: bounces
                    [d.recipient, *d.cc],
                    raw,
                    mail_options=["SMTPUTF8"] if utf8 else None,
                )
        except BaseException as exc:
            outcome = self._classify(exc)
            if outcome is None:
                raise
            if isinstance(outcome, Retry) or isinstance(exc, (SMTPServerDisconnected, SMTPTimeoutError)):
                await self.close()  # the connection's state is unknown: start afresh next time
            if (
                isinstance(outcome, Retry)
                and client is not None
                and client.handed_over
                and not isinstance(exc, SMTPResponseException)
            ):  # no reply to the message: unknown
                outcome = dataclasses.replace(outcome, in_doubt=True)
            return outcome
        self._last_used = time.monotonic()
        if refused:  # some (not all: that raises) of To and Cc refused; the others have it
            log.warning("notifier.delivery.recipients_refused", refused={a: r.code for a, r in refused.items()})
        queued = _QUEUED_AS.search(response or "")
        return Sent(provider_message_id=queued.group(1) if queued else msg_id, sent_at=utcnow())

    @staticmethod
    def _classify(exc: BaseException) -> Outcome | None:
        if isinstance(exc, SMTPRecipientsRefused):
            refused = exc.recipients[0] if exc.recipients else None
            code = refused.code if refused else 550
            text = f"{code} {refused.message if refused else 'recipient refused'}"
            if 400 <= code < 500:
                return Retry(f"smtp_{code}", text)
            return Failed(f"smtp_{code}", text, permanent=True)
        if isinstance(exc, (SMTPAuthenticationError, SMTPHeloError, SMTPConnectError, SMTPSenderRefused)):
            # The relay refuses us or our From address: configuration, not this message.
            return Retry("smtp_connect", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, SMTPResponseException):
            if 400 <= exc.code < 500 or exc.code < 200:
                return Retry(f"smtp_{exc.code}", f"{exc.code} {exc.message}")
            return Failed(f"smtp_{exc.code}", f"{exc.code} {exc.message}", permanent=True)
        if isinstance(exc, SMTPNotSupported):
            return Failed("smtp_not_supported", str(exc), permanent=True)
        if isinstance(exc, (SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
            return Retry("smtp_timeout", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, (SMTPServerDisconnected, aiosmtplib.SMTPException, OSError)):
            return Retry("smtp_connect", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, ValueError):  # aiosmtplib refused to put the address on the wire
            return Failed("invalid_recipient", str(exc), permanent=True)
        return None


class NotConfigured:
    """Stands in for a channel that has no provider: every delivery fails permanently."""

    def __init__(self, name: str):
        self.name = name

    def open_session(self) -> "NotConfigured":
        return self

    async def send(self, d: Delivery) -> Outcome:
        return Failed(
            "channel_not_configured", f"no provider is configured for the {self.name!r} channel", permanent=True
        )

    async def close(self) -> None:
        return None


PROVIDERS: dict[str, Callable[..., Channel]] = {
    "email": EmailChannel,
    "letter": LetterChannel,  # letters.py: a PDF through the print-and-mail provider (Lob API shape)
    "sms": SmsChannel,  # sms.py: Twilio's Messages API
    "webhook": WebhookChannel,  # webhooks_channel.py: reminder.due to the tenant's endpoints
    "call": CallChannel,  # tasks.py: a task for a collector (sent at once: provider_message_id = task id)
    "agency": AgencyChannel,  # agency.py: the case file handed to the collection agency
}


def build_channels(settings: Settings, renderer: Renderer, pool: Any = None) -> dict[str, Channel]:
    """One channel per provider; those that keep state of their own (a factory with a `pool` parameter)
    share the notifier's pool when one is given, else open a small one on first use."""
    return {
        name: factory(settings, renderer, **({"pool": pool} if pool is not None and _takes_pool(factory) else {}))
        for name, factory in PROVIDERS.items()
    }


def _takes_pool(factory: Callable[..., Channel]) -> bool:
    return "pool" in inspect.signature(factory).parameters


def channel_for(channels: dict[str, Channel], name: str) -> Channel:
    return channels.get(name) or NotConfigured(name)
