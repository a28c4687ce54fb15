"""What every event record shares: the `Contract` base (type, source, subject, tenant, topic), the
parts several events carry (`Customer`), and the conversions their `from_data`/`to_data` use."""

from datetime import date, datetime
from typing import Any, ClassVar, NamedTuple

from dunning.clock import isoformat

_INSTANT_TEXT: dict[datetime, str] = {}


def instant_text(value: datetime) -> str:
    """`dunning.clock.isoformat`, remembered: the events of a bulk import share their instants."""
    text = _INSTANT_TEXT.get(value)
    if text is None:
        if len(_INSTANT_TEXT) >= 50_000:
            _INSTANT_TEXT.clear()
        text = _INSTANT_TEXT[value] = isoformat(value)
    return text


_instant = datetime.fromisoformat  # "...Z" -> aware UTC (Python >= 3.11)
_day = date.fromisoformat
_new = tuple.__new__  # a NamedTuple from its values without the generated __new__ (decode path)


def topic_of(event_type: str) -> str:
    """The topic an event type travels on, from the catalogue (`schemas/topics/*.yaml`)."""
    from dunning.events import topic_for_type  # events imports this module (decode, envelope)

    return topic_for_type()[event_type]


class Contract:
    """What every event record has besides its fields: its type string, the source its schema fixes,
    the envelope's subject and tenant, its topic, and the conversions from and to the `data`."""

    __slots__ = ()
    TYPE: ClassVar[str]
    SOURCE: ClassVar[str]

    @property
    def subject(self) -> str:
        """The envelope's subject and Kafka key: the invoice id."""
        return str(getattr(self, "invoice_id"))  # noqa: B009 - a field of the record, not of this base

    @property
    def tenant(self) -> str:
        """The envelope's tenantid."""
        return str(getattr(self, "tenant_id"))  # noqa: B009 - a field of the record, not of this base

    @classmethod
    def topic(cls) -> str:
        """The topic this event type travels on, from the catalogue."""
        return topic_of(cls.TYPE)

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> Any:
        raise NotImplementedError

    def to_data(self) -> dict[str, Any]:
        raise NotImplementedError


class Customer(NamedTuple):
    customer_id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> "Customer":
        return _new(cls, (d["customer_id"], d["external_id"], d["name"], d["email"], d["locale"], d["timezone"]))

    def to_data(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "external_id": self.external_id,
            "name": self.name,
            "email": self.email,
            "locale": self.locale,
            "timezone": self.timezone,
        }
