"""Reading what arrives on the inbound SMTP endpoint (inbound.py), without any I/O: which of our
addresses a recipient is, RFC 3464 delivery status notifications, RFC 3834 automatic replies, the
reminder a reply answers, and a reply's text.

Our addresses (all at `inbound_domain`): `unsubscribe+{token}` (the List-Unsubscribe mailto),
`reply+{delivery_id}` (the Reply-To of a tenant without its own), `bounce+{delivery_id}` (the VERP
envelope sender: where DSNs come back to).
"""

import html
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from typing import NamedTuple

_DELIVERY_ID = re.compile(r"dlv_[0-9A-Za-z]{10,40}")
_MSG_ID_DELIVERY = re.compile(r"<(dlv_[0-9A-Za-z]{10,40})@[^>\s]+>")
_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")
_TAGS = re.compile(r"<[^>]+>")
_OUT_OF_OFFICE = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|autoreply|auto:|"
    r"abwesenheitsnotiz|abwesend|absence|réponse automatique|risposta automatica|respuesta automática)",
    re.IGNORECASE,
)
MAX_TEXT = 100_000


class Target(NamedTuple):
    """One of our addresses: `kind` unsubscribe | reply | bounce, and its token or delivery id."""

    kind: str
    value: str


def target_of(address: str, domain: str) -> Target | None:
    """What an envelope recipient is, or None if it is not one of our addresses."""
    local, at, host = address.strip().strip("<>").rpartition("@")
    if not at or host.lower() != domain.lower():
        return None
    kind, plus, value = local.partition("+")
    kind = kind.lower()
    if not plus or not value or kind not in ("unsubscribe", "reply", "bounce"):
        return None
    if kind != "unsubscribe" and not _DELIVERY_ID.fullmatch(value):
        return None
    return Target(kind, value)


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 section 2.3)."""

    recipient: str  # Final-Recipient's address (or Original-Recipient's)
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. 5.1.1
    diagnostic: str | None

    @property
    def permanent_failure(self) -> bool:
        return self.action == "failed" and self.status.startswith("5.")


@dataclass(frozen=True)
class Report:
    """A DSN: its recipients' statuses and the delivery its returned message names (if any)."""

    recipients: list[RecipientStatus]
    delivery_id: str | None


def _address_field(value: str | None) -> str:
    """`rfc822; a@b` -> `a@b` (RFC 3464 address-type; address)."""
    if not value:
        return ""
    _, _, address = str(value).partition(";")
    return (address or str(value)).strip().strip("<>")


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part: the per-message one first, then one per
    recipient. The email package parses the part's body into those blocks as sub-messages."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    from email import message_from_string  # a part the parser left as text: parse its blocks

    return [message_from_string(block) for block in re.split(r"\r?\n\r?\n", str(payload)) if block.strip()]


def is_report(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() == "delivery-status"
    )


def parse_report(msg: Message) -> Report | None:
    """The DSN in `msg` (RFC 3464: multipart/report; report-type=delivery-status), or None if it is
    not one. Statuses that do not parse as RFC 3463 codes are left out."""
    if not is_report(msg):
        return None
    recipients: list[RecipientStatus] = []
    delivery_id = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _status_blocks(part)[1:]:
                status = str(block.get("Status", "")).strip().split(" ")[0]
                action = str(block.get("Action", "")).strip().lower()
                recipient = _address_field(block.get("Final-Recipient")) or _address_field(
                    block.get("Original-Recipient")
                )
                if not _STATUS.match(status) or not action or not recipient:
                    continue
                diagnostic = block.get("Diagnostic-Code")
                recipients.append(
                    RecipientStatus(
                        recipient, action, status, " ".join(str(diagnostic).split()) if diagnostic else None
                    )
                )
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"):
            delivery_id = delivery_id or _returned_delivery(part)
    return Report(recipients, delivery_id)


def _returned_delivery(part: Message) -> str | None:
    """The delivery id the returned message (or its headers) names: X-Dunning-Delivery-Id, else the
    Message-ID we gave it."""
    inner: Message | None = None
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
    elif isinstance(payload, str):
        from email import message_from_string

        inner = message_from_string(payload)
    if inner is None:
        return None
    named = str(inner.get("X-Dunning-Delivery-Id", "")).strip()
    if _DELIVERY_ID.fullmatch(named):
        return named
    found = _MSG_ID_DELIVERY.search(str(inner.get("Message-ID", "")))
    return found.group(1) if found else None


def is_auto_reply(msg: Message) -> bool:
    """An automatic answer (RFC 3834 Auto-Submitted other than `no`; Precedence bulk/junk/list;
    the de-facto X-Autoreply / X-Autorespond headers; an out-of-office subject)."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Auto-Response-Suppress"):
        return True
    return bool(_OUT_OF_OFFICE.match(str(msg.get("Subject", ""))))


def replied_delivery(msg: Message) -> str | None:
    """The reminder a reply answers, by threading: In-Reply-To, then References (newest last), each
    the reminder's Message-ID `<{delivery_id}@{message_id_domain}>`."""
    found = _MSG_ID_DELIVERY.search(str(msg.get("In-Reply-To", "")))
    if found:
        return found.group(1)
    refs = _MSG_ID_DELIVERY.findall(str(msg.get("References", "")))
    return refs[-1] if refs else None


def sender_of(msg: Message, envelope_from: str | None) -> str:
    """The reply's author: From, else the envelope sender."""
    pairs = getaddresses([str(msg.get("From", ""))])
    address = next((a for _, a in pairs if "@" in a), "") or parseaddr(envelope_from or "")[1]
    return address[:320] or "unknown"


def text_of(msg: EmailMessage) -> str:
    """The reply's text: its text/plain body, else its HTML with the tags taken out."""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
        content = body.get_content() if body is not None else ""
        if body is not None and body.get_content_type() == "text/html":
            content = html.unescape(_TAGS.sub(" ", content))
    except (LookupError, ValueError, AttributeError):  # an unknown charset, a broken part
        content = ""
    return "\n".join(line.rstrip() for line in str(content).strip().splitlines())[:MAX_TEXT]
