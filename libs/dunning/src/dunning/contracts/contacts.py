"""The notifier's events about a customer's contacts, on dunning.deliveries.v1: a reply to a reminder
(keyed by the invoice it answers) and an opt-out from a channel (keyed by the customer)."""

from datetime import datetime
from typing import ClassVar, NamedTuple

from dunning.contracts.base import Contract


class _CustomerReplied(NamedTuple):
    reply_id: str
    delivery_id: str  # the reminder replied to
    invoice_id: str
    tenant_id: str
    customer_id: str | None
    stage: str
    channel: str
    from_address: str
    mail_subject: str  # the reply's Subject (`subject` is the envelope's: the invoice id)
    excerpt: str  # the reply's text, at most 2,000 characters
    auto_reply: bool  # an out-of-office or other automatic answer: shown, not counted, never pauses
    pause_days: int | None  # the tenant pauses dunning this many days on a reply (None: it does not)
    received_at: datetime


class CustomerReplied(_CustomerReplied, Contract):
    """A customer answered a reminder (received on the notifier's inbound SMTP endpoint)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.CustomerReplied.v1"
    SOURCE: ClassVar[str] = "/notifier"


class _ContactOptedOut(NamedTuple):
    tenant_id: str
    customer_id: str
    channel: str
    address: str
    reason: str  # one_click | mailto | sms_stop | ...
    source: str  # http | inbound_smtp | sms
    opted_out_at: datetime


class ContactOptedOut(_ContactOptedOut, Contract):
    """A customer asked not to be contacted on a channel at an address (no reminder goes there)."""

    __slots__ = ()
    TYPE: ClassVar[str] = "dunning.ContactOptedOut.v1"
    SOURCE: ClassVar[str] = "/notifier"

    @property
    def subject(self) -> str:
        """The envelope's subject and Kafka key: the customer id."""
        return self.customer_id
