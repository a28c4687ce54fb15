"""What every event record shares: the `Record` base that writes `from_data`/`to_data` from the
record's field types, the `Contract` base (type, source, subject, tenant, topic), and the parts
several events carry (`Customer`)."""

import types
import typing
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple, Self

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


_PLAIN = (str, int, bool)  # JSON values a field keeps as they are (also `str | None`, `dict[str, ...]`)


def _conversions(name: str, kind: Any, ns: dict[str, Any]) -> tuple[str, str]:
    """How one field is read from its JSON value (`d[...]`) and written back (`self.<name>`), as code."""
    raw, value = f"d[{name!r}]", f"self.{name}"
    if kind is datetime:
        return f"_instant({raw})", f"instant_text({value})"
    if kind is date:
        return f"_day({raw})", f"{value}.isoformat()"
    if kind is Decimal:
        return f"Decimal({raw})", f"str({value})"
    if isinstance(kind, type) and issubclass(kind, Record):
        ns[kind.__name__] = kind
        return f"{kind.__name__}.from_data({raw})", f"{value}.to_data()"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is types.UnionType and set(args) == {datetime, type(None)}:  # an optional instant
        return f"(None if {raw} is None else _instant({raw}))", f"(None if {value} is None else instant_text({value}))"
    if origin is types.UnionType and set(args) == {date, type(None)}:  # an optional day
        return f"(None if {raw} is None else _day({raw}))", f"(None if {value} is None else {value}.isoformat())"
    if origin is types.UnionType and set(args) == {Decimal, type(None)}:  # an optional amount
        return f"(None if {raw} is None else Decimal({raw}))", f"(None if {value} is None else str({value}))"
    if origin is types.UnionType and set(args) <= {int, type(None)}:
        return raw, value
    if origin is types.UnionType and all(a is type(None) or typing.get_origin(a) is dict for a in args):
        return raw, value  # an optional JSON object of plain values
    if origin is types.UnionType and set(args) == {tuple[str, ...], type(None)}:  # an optional array of strings
        return f"(None if {raw} is None else tuple({raw}))", f"(None if {value} is None else list({value}))"
    if origin is tuple and args == (str, Ellipsis):  # a JSON array of strings
        return f"tuple({raw})", f"list({value})"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and issubclass(args[0], Record):
        ns[args[0].__name__] = args[0]
        return f"tuple([{args[0].__name__}.from_data(s) for s in {raw}])", f"[s.to_data() for s in {value}]"
    if kind in _PLAIN or origin is dict or (origin is types.UnionType and set(args) <= {str, type(None)}):
        return raw, value
    raise TypeError(f"{name}: no JSON conversion for {kind!r}")


class Record:
    """A record with a JSON form: `from_data(d)` builds it from its JSON `data`, `to_data()` writes it
    back. Both are written once per record type from its fields' types (instants as text through
    `instant_text`, days as ISO dates, `Decimal` as text, nested records and tuples of them through
    their own conversions, the rest as is), the way `dataclasses` writes `__init__`: the generated
    code is what one would write by hand for each record, so decoding costs no more than that."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: tuple[str, ...] | None = getattr(cls, "_fields", None)
        if fields is None:  # an abstract base (Contract), not a record
            return
        hints = typing.get_type_hints(cls)
        ns: dict[str, Any] = {"_new": _new, "_instant": _instant, "_day": _day, "Decimal": Decimal}
        ns["instant_text"] = instant_text
        reads, writes = zip(*(_conversions(name, hints[name], ns) for name in fields), strict=True)
        defaults: dict[str, Any] = getattr(cls, "_field_defaults", {})
        if any(v is not None for v in defaults.values()):
            raise TypeError(f"{cls.__name__}: a field added later must default to None")
        # A field added later (with a default) may be missing from older events.
        reads = tuple(
            f"({r} if {n!r} in d else None)" if n in defaults else r for n, r in zip(fields, reads, strict=True)
        )
        # ... and is left out when None, so an event without it reads as it did before.
        drops = "".join(f"    if self.{n} is None:\n        del r[{n!r}]\n" for n in defaults)
        source = (
            f"def from_data(cls, d):\n    return _new(cls, ({', '.join(reads)},))\n"
            "def to_data(self):\n    r = {"
            + ", ".join(f"{name!r}: {write}" for name, write in zip(fields, writes, strict=True))
            + "}\n"
            + drops
            + "    return r\n"
        )
        exec(source, ns)
        cls.from_data = classmethod(ns["from_data"])  # type: ignore[method-assign,assignment]
        cls.to_data = ns["to_data"]  # type: ignore[method-assign]

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> Self:
        """The record from its JSON `data` (already validated against its schema)."""
        raise NotImplementedError

    def to_data(self) -> dict[str, Any]:
        """The record's JSON `data`."""
        raise NotImplementedError


class Contract(Record):
    """What every event record has besides its fields: its type string, the source its schema fixes,
    the envelope's subject and tenant, its topic; `from_data`/`to_data` come from `Record`."""

    __slots__ = ()
    TYPE: ClassVar[str]
    SOURCE: ClassVar[str]

    @property
    def subject(self) -> str:
        """The envelope's subject and Kafka key: the invoice id (the customer id for customer events)."""
        return str(getattr(self, "invoice_id"))  # noqa: B009 - a field of the record, not of this base

    @property
    def tenant(self) -> str:
        """The envelope's tenantid."""
        return str(getattr(self, "tenant_id"))  # noqa: B009 - a field of the record, not of this base

    @classmethod
    def topic(cls) -> str:
        """The topic this event type travels on, from the catalogue."""
        return topic_of(cls.TYPE)


class _Customer(NamedTuple):
    customer_id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str
    # Added later (absent in older events; omitted when None). Where the customer is, for its public
    # holidays: ISO 3166-1 alpha-2 country and ISO 3166-2 subdivision code without the country
    # ("BY" for Bavaria); the tags and attributes policy segments match on.
    country: str | None = None
    subdivision: str | None = None
    tags: tuple[str, ...] | None = None
    attributes: dict[str, str] | None = None
    # Added later still: the phone in E.164 (+4930123456; SMS and calls) and the postal address
    # ({name, lines[1..4], postal_code, city, region, country}; letters).
    phone: str | None = None
    postal_address: dict[str, Any] | None = None


class Customer(_Customer, Record):
    """The customer as events carry it (InvoiceIssued, CustomerUpdated, StageEscalated, NoticeComposed)."""

    __slots__ = ()
