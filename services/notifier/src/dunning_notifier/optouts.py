"""Opt-outs, invalid contacts and channel fallback: who must not get a reminder where, and where the
reminder goes instead.

A customer opts out of a channel at an address (RFC 8058 one-click: the `List-Unsubscribe` URL every
reminder e-mail carries, a mail to its `mailto:` address, an SMS STOP); an address is invalid once
the mail server refused it (a 5xx to RCPT at send time) or a DSN reported it failed. Both are
`contact_blocks` rows (optouts_repository.py), audited. Every later stage honours them at send time:
the dispatcher `screen`s each claimed delivery, and one whose address is blocked is not sent but
failed (`opted_out` / `contact_invalid`, or `no_allowed_channel` when the tenant's fallback order has
no channel left); `fall_back`, in the transaction that records that failure (or a hard bounce), makes
one delivery of the same stage on the next channel of the tenant's order (`fallback_of` links them;
the deliveries table's (invoice, stage, channel) key keeps it to one). Why and how:
docs/contact-preferences.md.

The unsubscribe token is `base32(tenant \\x1f customer \\x1f channel \\x1f address) . base32(mac)`,
lower-case (a mail system may fold the local part's case), the MAC an HMAC-SHA256 (first 16 bytes)
with the `unsubscribe_secret` setting: it names what to opt out, so it works without a database
lookup and for consolidated notices too, and cannot be forged or altered.
"""

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg

from dunning import outbox
from dunning.contracts import ContactOptedOut, StageEscalated
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import optouts_repository as repo
from dunning_notifier.handlers import recipient_for
from dunning_notifier.outcomes import Delivery, Failed
from dunning_notifier.settings import Settings

log = get_logger(__name__)
DEFAULT_FALLBACK = ("email", "sms", "letter")
# The channels that cannot go without an address of the customer (a letter: its postal address).
ADDRESSED = frozenset({"email", "sms", "letter"})
_MAC_BYTES = 16
_SEP = "\x1f"
# A 5xx to RCPT (channels.py's classification): the mailbox does not exist / is not ours / bad name.
HARD_BOUNCE_CODES = frozenset({"smtp_550", "smtp_551", "smtp_553"})
# The failures that send the stage to the next channel.
FALLBACK_CODES = frozenset({"opted_out", "contact_invalid", "bounced"}) | HARD_BOUNCE_CODES  # bounced: a DSN


class Subject(NamedTuple):
    """What an unsubscribe token names."""

    tenant_id: str
    customer_id: str
    channel: str
    address: str


class BadToken(ValueError):
    """Not a token this service signed (altered, truncated, or signed with another secret)."""


def normalise(channel: str, address: str) -> str:
    """The form an address is compared in: e-mail lower-cased, the others trimmed."""
    return address.strip().lower() if channel == "email" else address.strip()


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def _secret(settings: Settings) -> bytes:
    if settings.unsubscribe_secret is None:
        raise RuntimeError("NOTIFIER_UNSUBSCRIBE_SECRET is not set (required unless NOTIFIER_ENV=dev)")
    return settings.unsubscribe_secret.get_secret_value().encode()


def sign(subject: Subject, settings: Settings) -> str:
    body = _SEP.join(
        (subject.tenant_id, subject.customer_id, subject.channel, normalise(subject.channel, subject.address))
    )
    mac = hmac.new(_secret(settings), body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{_b32(body.encode())}.{_b32(mac)}"


def verify(token: str, settings: Settings) -> Subject:
    """The subject a token names; BadToken if it is not one of ours."""
    body_text, dot, mac_text = token.strip().lower().partition(".")
    try:
        body, mac = _unb32(body_text), _unb32(mac_text)
    except (ValueError, TypeError):
        raise BadToken("not a token") from None
    if not dot or len(mac) != _MAC_BYTES:
        raise BadToken("not a token")
    expected = hmac.new(_secret(settings), body, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise BadToken("signature does not match")
    parts = body.decode("utf-8", "replace").split(_SEP)
    if len(parts) != 4 or not all(parts):
        raise BadToken("not a token")
    return Subject(*parts)


def check_settings(settings: Settings) -> None:
    """At start-up: without a secret (production, NOTIFIER_UNSUBSCRIBE_SECRET unset) reminders go out
    without List-Unsubscribe (and no unsubscribe link is valid); said loudly, once."""
    if settings.unsubscribe_secret is None:
        log.error("notifier.unsubscribe.not_configured", hint="set NOTIFIER_UNSUBSCRIBE_SECRET (or NOTIFIER_ENV=dev)")
    elif settings.env != "dev" and len(settings.unsubscribe_secret.get_secret_value()) < 32:
        raise ValueError("NOTIFIER_UNSUBSCRIBE_SECRET must be at least 32 characters")
    if not settings.public_url:
        log.warning("notifier.unsubscribe.no_public_url", hint="set NOTIFIER_PUBLIC_URL for List-Unsubscribe")


def customer_of(d: Delivery) -> str | None:
    """The customer a delivery (or a consolidated notice) is for."""
    customer = d.payload.get("customer") or {}
    return customer.get("customer_id") or d.payload.get("customer_id")


def list_unsubscribe_headers(
    d: Delivery, settings: Settings, headers: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The headers a reminder e-mail gets for opt-outs and replies: RFC 8058 one-click (RFC 2369
    List-Unsubscribe: the HTTPS URL and a mailto address on the inbound endpoint; left out without a
    secret, a public URL or a customer), and, when the inbound endpoint runs and `headers` has no
    Reply-To of the tenant's, `Reply-To: reply+{delivery_id}@{inbound_domain}`."""
    out = []
    customer_id = customer_of(d)
    if settings.unsubscribe_secret is not None and settings.public_url and customer_id and d.recipient:
        token = sign(Subject(d.tenant_id, customer_id, d.channel, d.recipient), settings)
        url = f"{settings.public_url.rstrip('/')}/v1/unsubscribe/{token}"
        out += [
            ("List-Unsubscribe", f"<{url}>,\r\n <mailto:unsubscribe+{token}@{settings.inbound_domain}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
    if settings.inbound_smtp_port and not any(name.lower() == "reply-to" for name, _ in headers):
        out.append(("Reply-To", f"reply+{d.delivery_id}@{settings.inbound_domain}"))
    return out


def envelope_from(d: Delivery, settings: Settings) -> str | None:
    """The SMTP envelope sender (VERP: `bounce+{delivery_id}@{inbound_domain}`, so that a DSN names its
    delivery) when the inbound endpoint runs; None: the configured sender."""
    return f"bounce+{d.delivery_id}@{settings.inbound_domain}" if settings.inbound_smtp_port else None


async def record_opt_out(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, channel: str, address: str, source: str
) -> bool:
    """Opt a customer out of `channel` at `address` (ContactOptedOut through the outbox, in the caller's
    transaction); False if it already was. `source`: how it came (http, inbound_smtp, sms...); the
    reason recorded is `one_click` (http), `mailto` (inbound_smtp), `sms_stop` (sms) or the source."""
    reason = {"http": "one_click", "inbound_smtp": "mailto", "sms": "sms_stop"}.get(source, source)
    address = normalise(channel, address)
    row = await repo.block(
        conn,
        tenant_id=tenant_id,
        customer_id=customer_id,
        channel=channel,
        address=address,
        kind="opted_out",
        reason=reason,
        source=source,
    )
    if row is None:
        return False
    event = ContactOptedOut(tenant_id, customer_id, channel, address, reason, source, row["created_at"])
    await outbox.add(conn, event)
    log.info("notifier.contact.opted_out", customer_id=customer_id, channel=channel, reason=reason)
    return True


async def record_invalid(
    conn: asyncpg.Connection,
    tenant_id: str,
    customer_id: str,
    channel: str,
    address: str,
    reason: str,
    source: str,
    delivery_id: str | None = None,
) -> bool:
    """Mark an address invalid on a channel (a hard bounce); False if it already was."""
    row = await repo.block(
        conn,
        tenant_id=tenant_id,
        customer_id=customer_id,
        channel=channel,
        address=normalise(channel, address),
        kind="invalid",
        reason=reason,
        source=source,
        delivery_id=delivery_id,
    )
    if row is not None:
        log.info("notifier.contact.invalidated", customer_id=customer_id, channel=channel, reason=reason)
    return row is not None


async def fallback_order(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str) -> tuple[str, ...]:
    row = await repo.preferences(conn, tenant_id)
    return tuple(row["fallback"]) if row is not None else DEFAULT_FALLBACK


def next_channels(order: Sequence[str], channel: str, configured: Collection[str]) -> list[str]:
    """The channels after `channel` in the tenant's order that have a provider (none if `channel` is
    not in the order: the tenant did not make it part of a fallback chain)."""
    if channel not in order:
        return []
    return [c for c in order[order.index(channel) + 1 :] if c in configured]


def recipient_on(payload: Mapping[str, Any], channel: str) -> str | None:
    """The address the stage's customer snapshot has for `channel` (handlers.recipient_for's rule)."""
    try:
        stage = StageEscalated.from_data(dict(payload))
    except (KeyError, TypeError, ValueError):
        return None
    return recipient_for(stage._replace(channel=channel))


async def screen(pool: asyncpg.Pool, d: Delivery, configured: Collection[str]) -> Failed | None:
    """A Failed outcome if the delivery's address is opted out or invalid on its channel, else None
    (send it). `no_allowed_channel` when no later channel of the tenant's order could take it."""
    customer_id = customer_of(d)
    if not customer_id or not d.recipient:
        return None
    async with pool.acquire() as conn:
        found = await repo.active_block(conn, d.tenant_id, customer_id, d.channel, [normalise(d.channel, d.recipient)])
        return None if found is None else await _refusal(conn, d, customer_id, found, configured)


async def _refusal(
    conn: asyncpg.Connection, d: Delivery, customer_id: str, found: Mapping[str, Any], configured: Collection[str]
) -> Failed:
    """The outcome of a delivery whose address `found` blocks."""
    if d.payload.get("notice_id") is not None:  # a consolidated notice: not sent, no fallback (several stages)
        code = "opted_out" if found["kind"] == "opted_out" else "contact_invalid"
        return Failed(code, f"{d.recipient} is blocked on {d.channel} ({found['reason']})", permanent=True)
    order = await fallback_order(conn, d.tenant_id)
    left = await next_allowed(conn, d.tenant_id, customer_id, order, d.channel, d.payload, configured)
    code = "opted_out" if found["kind"] == "opted_out" else "contact_invalid"
    what = "opted out of" if code == "opted_out" else "is invalid on"
    detail = f"{d.recipient} {what} {d.channel} ({found['reason']}, {found['created_at'].isoformat()})"
    if left is None:
        return Failed("no_allowed_channel", f"{detail}; no channel left in the fallback order", permanent=True)
    return Failed(code, detail, permanent=True)


class Screen:
    """The dispatcher's screen: a claimed batch is looked up in one query as it is claimed (`claimed`),
    and each send asks `outcome` (the batch's answer; a query of its own if the batch's failed)."""

    def __init__(self, pool: asyncpg.Pool, configured: Collection[str]):
        self.pool = pool
        self.configured = configured
        self._answers: dict[str, Failed | None] = {}

    async def claimed(self, conn: asyncpg.Connection, batch: Sequence[Delivery]) -> None:
        """Screen a claimed batch; never raises (a delivery left unscreened is looked up at its send)."""
        keyed = [(d, c) for d, c in ((d, customer_of(d)) for d in batch) if c and d.recipient]
        keys = [(d.tenant_id, c, d.channel, normalise(d.channel, d.recipient or "")) for d, c in keyed]
        try:
            found = await repo.active_blocks(conn, keys)
            answers: dict[str, Failed | None] = {}
            for i, block in found.items():
                d, customer_id = keyed[i]
                answers[d.delivery_id] = await _refusal(conn, d, customer_id, block, self.configured)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("notifier.optouts.screen_deferred", error=repr(exc), count=len(batch))
            return
        for d in batch:
            self._answers[d.delivery_id] = answers.get(d.delivery_id)

    async def outcome(self, d: Delivery) -> Failed | None:
        """Failed if the delivery must not be sent (opted out, invalid), else None."""
        if d.delivery_id in self._answers:
            return self._answers.pop(d.delivery_id)
        return await screen(self.pool, d, self.configured)


async def next_allowed(
    conn: asyncpg.Connection,
    tenant_id: str,
    customer_id: str,
    order: Sequence[str],
    channel: str,
    payload: Mapping[str, Any],
    configured: Collection[str],
) -> tuple[str, str | None] | None:
    """(channel, address) of the first channel after `channel` in the order that has a provider, an
    address where the channel needs one (e-mail, SMS, letter: ADDRESSED) and no block on it; None if none."""
    for candidate in next_channels(order, channel, configured):
        recipient = recipient_on(payload, candidate)
        if recipient is None:
            if candidate in ADDRESSED:
                continue
            return candidate, None  # a webhook, a call task: the channel reads what it needs from the payload
        if not await repo.active_block(conn, tenant_id, customer_id, candidate, [normalise(candidate, recipient)]):
            return candidate, recipient
    return None


class Origin(NamedTuple):
    """The delivery a fallback stands in for."""

    delivery_id: str
    tenant_id: str
    channel: str
    recipient: str | None
    payload: dict[str, Any]


async def fall_back(
    conn: asyncpg.Connection, failures: Sequence[tuple[Origin, str]], configured: Collection[str]
) -> list[str]:
    """For each (delivery, error code) that sends its stage elsewhere (FALLBACK_CODES): a hard bounce
    marks the address invalid, and one delivery of the stage is made on the next channel of the
    tenant's order that has a provider, an address and no block. Runs in the caller's transaction.
    The ids of the deliveries made."""
    made = []
    for origin, code in failures:
        if code not in FALLBACK_CODES:
            continue
        customer_id = (origin.payload.get("customer") or {}).get("customer_id")
        if not customer_id:
            continue
        if code in HARD_BOUNCE_CODES and origin.channel == "email" and origin.recipient:
            await record_invalid(
                conn, origin.tenant_id, customer_id, "email", origin.recipient, code, "dispatcher", origin.delivery_id
            )
        order = await fallback_order(conn, origin.tenant_id)
        found = await next_allowed(
            conn, origin.tenant_id, customer_id, order, origin.channel, origin.payload, configured
        )
        if found is None:
            log.info("notifier.delivery.no_fallback", fallback_of=origin.delivery_id, cause=code)
            continue
        channel, recipient = found
        new = await repo.insert_fallback(
            conn, delivery_id=new_id("dlv"), channel=channel, recipient=recipient, fallback_of=origin.delivery_id
        )
        log.info(
            "notifier.delivery.fallback" if new else "notifier.delivery.fallback_exists",
            fallback_of=origin.delivery_id,
            channel=channel,
            delivery_id=new,
            cause=code,
        )
        if new:
            made.append(new)
    return made


def origin_of(d: Delivery) -> Origin:
    return Origin(d.delivery_id, d.tenant_id, d.channel, d.recipient, d.payload)
