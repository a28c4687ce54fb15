"""The inbound SMTP endpoint (aiosmtpd, in the notifier's process and event loop; bootstrap starts it
when `inbound_smtp_port` is set): what comes back from the customers' side.

- a mail to `unsubscribe+{token}@{inbound_domain}` (the List-Unsubscribe mailto) opts the customer
  out, as the one-click POST does;
- a DSN (RFC 3464) to `bounce+{delivery_id}@…` (the VERP envelope sender), or naming the delivery in
  the returned message: `Action: failed` with a 5.x.x status marks the delivery `bounced`, the
  address invalid, and sends the stage to the next channel (optouts.fall_back); a 4.x.x (delayed)
  is only recorded;
- anything else that names a reminder (`reply+{delivery_id}@…`, or In-Reply-To / References its
  Message-ID) is a reply: stored, and CustomerReplied published (with the tenant's pause, unless it
  is an automatic answer).

Each message is handled in one transaction before the 250: a database error answers 451 (the sender
retries later), so nothing accepted is lost. Unknown recipients are refused at RCPT (550), and a
message over `inbound_max_bytes` at DATA (552).
"""

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import asyncpg
from aiosmtpd.smtp import SMTP, Envelope, Session

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import CustomerReplied
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import inbound_mail as mail
from dunning_notifier import optouts
from dunning_notifier import optouts_repository as repo
from dunning_notifier.settings import Settings

log = get_logger(__name__)


class InboundHandler:
    """aiosmtpd handler: RCPT checks the address, DATA applies the message."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, configured: set[str]):
        self.pool = pool
        self.settings = settings
        self.configured = configured

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        target = mail.target_of(address, self.settings.inbound_domain)
        if target is None:
            return "550 5.1.1 No such recipient here"
        if target.kind == "unsubscribe":
            try:
                optouts.verify(target.value, self.settings)
            except optouts.BadToken:
                return "550 5.1.1 Unknown unsubscribe address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                outcome = await apply(conn, self.settings, self.configured, envelope.mail_from, envelope.rcpt_tos, data)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("notifier.inbound.deferred", error=repr(exc))
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:  # a bug: deferred too, so the sender retries it once fixed (nothing dropped)
            log.exception("notifier.inbound.failed", mail_from=envelope.mail_from)
            return "451 4.3.0 Temporary failure, try again later"
        log.info("notifier.inbound.received", outcome=outcome, recipients=len(envelope.rcpt_tos))
        return "250 2.0.0 OK"


async def apply(
    conn: asyncpg.Connection,
    settings: Settings,
    configured: set[str],
    mail_from: str | None,
    rcpt_tos: list[str],
    data: bytes,
) -> str:
    """Apply one inbound message (inside the caller's transaction); what it was, for the log."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    targets = [t for t in (mail.target_of(a, settings.inbound_domain) for a in rcpt_tos) if t is not None]
    outcomes = []
    for target in [t for t in targets if t.kind == "unsubscribe"]:
        subject = optouts.verify(target.value, settings)
        done = await optouts.record_opt_out(
            conn, subject.tenant_id, subject.customer_id, subject.channel, subject.address, "inbound_smtp"
        )
        outcomes.append("opted_out" if done else "already_opted_out")
    if outcomes and len(outcomes) == len(targets):
        return ",".join(outcomes)
    named = next((t.value for t in targets if t.kind in ("bounce", "reply")), None)
    report = mail.parse_report(msg)
    if report is not None:
        return await apply_report(conn, configured, report, named)
    if not mail_from or mail_from == "<>":  # a bounce that is not a DSN: never taken for a reply
        return "unreadable_bounce"
    delivery_id = next((t.value for t in targets if t.kind == "reply"), None) or mail.replied_delivery(msg)
    return await apply_reply(conn, msg, mail_from, delivery_id)


async def apply_report(conn: asyncpg.Connection, configured: set[str], report: mail.Report, named: str | None) -> str:
    """A DSN: each recipient's status recorded; a permanent failure bounces the delivery."""
    delivery_id = named or report.delivery_id
    row = await repo.delivery(conn, delivery_id) if delivery_id else None
    if row is None:
        log.warning("notifier.inbound.report_unmatched", delivery_id=delivery_id)
        return "report_unmatched"
    bounced = False
    for r in report.recipients:
        new = await repo.record_report(conn, row["delivery_id"], r.recipient, r.action, r.status, r.diagnostic)
        log.info("notifier.delivery.report", delivery_id=row["delivery_id"], action=r.action, status=r.status, new=new)
        if new and r.permanent_failure:
            bounced = True
            if row["customer_id"]:
                await optouts.record_invalid(
                    conn,
                    row["tenant_id"],
                    row["customer_id"],
                    row["channel"],
                    r.recipient,
                    f"dsn_{r.status}",
                    "inbound_smtp",
                    row["delivery_id"],
                )
    if not bounced:
        return "report_recorded"
    await repo.mark_bounced(conn, row["delivery_id"])
    origin = optouts.Origin(row["delivery_id"], row["tenant_id"], row["channel"], row["recipient"], row["payload"])
    await optouts.fall_back(conn, [(origin, "bounced")], configured)
    log.warning("notifier.delivery.bounced", delivery_id=row["delivery_id"], invoice_id=row["invoice_id"])
    return "bounced"


async def apply_reply(conn: asyncpg.Connection, msg: EmailMessage, mail_from: str, delivery_id: str | None) -> str:
    """A reply to a reminder: stored once (by its Message-ID) and CustomerReplied published."""
    row = await repo.delivery(conn, delivery_id) if delivery_id else None
    if row is None:
        log.info("notifier.inbound.reply_unmatched", delivery_id=delivery_id)
        return "reply_unmatched"
    auto = mail.is_auto_reply(msg)
    reply = {
        "reply_id": new_id("rpl"),
        "tenant_id": row["tenant_id"],
        "delivery_id": row["delivery_id"],
        "invoice_id": row["invoice_id"],
        "customer_id": row["customer_id"],
        "channel": row["channel"],
        "stage": row["stage"],
        "from_address": mail.sender_of(msg, mail_from),
        "subject": " ".join(str(msg.get("Subject", "")).split())[:998],
        "text": mail.text_of(msg),
        "message_id": str(msg.get("Message-ID", "")).strip()[:998] or None,
        "auto_reply": auto,
        "received_at": utcnow(),
    }
    if not await repo.insert_reply(conn, reply):
        return "reply_duplicate"
    prefs = await repo.preferences(conn, row["tenant_id"])
    pause = prefs["pause_days"] if prefs is not None and prefs["pause_on_reply"] and not auto else None
    await outbox.add(conn, customer_replied(reply, pause))
    log.info("notifier.reply.received", delivery_id=row["delivery_id"], auto_reply=auto, pause_days=pause)
    return "auto_reply" if auto else "reply"


def customer_replied(reply: dict[str, Any], pause_days: int | None) -> CustomerReplied:
    customer_id = reply["customer_id"] if str(reply["customer_id"] or "").startswith("cus_") else None
    return CustomerReplied(
        reply["reply_id"],
        reply["delivery_id"],
        reply["invoice_id"],
        reply["tenant_id"],
        customer_id,
        reply["stage"],
        reply["channel"],
        reply["from_address"],
        reply["subject"],
        reply["text"][:2000],
        reply["auto_reply"],
        pause_days,
        reply["received_at"],
    )


class InboundSmtp:
    """The endpoint as a runtime worker: listens on (inbound_smtp_host, inbound_smtp_port) until stopped."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, configured: set[str]):
        self.handler = InboundHandler(pool, settings, configured)
        self.settings = settings
        self._stopping = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(
                self.handler,
                data_size_limit=s.inbound_max_bytes,
                hostname=s.inbound_domain,
                ident="dunning-notifier inbound",
            ),
            host=s.inbound_smtp_host,
            port=s.inbound_smtp_port,
            reuse_port=s.http_reuse_port or None,  # replicas on one host share it, as they share the HTTP port
        )
        log.info("notifier.inbound.listening", host=s.inbound_smtp_host, port=s.inbound_smtp_port)
        return self.server

    async def run(self) -> None:
        server = await self.start()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await server.wait_closed()

    def stop(self) -> None:
        self._stopping.set()
