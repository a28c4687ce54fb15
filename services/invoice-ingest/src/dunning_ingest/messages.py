"""The events invoice-ingest publishes (through the outbox): InvoiceIssued, the changes that
follow it (InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff), and the stops it acknowledges
(HoldPlaced, HoldReleased, DisputeOpened, DisputeResolved, PromiseMade), each built in one place.

`invoice_issued` is the builder: an accepted invoice (invoice_input.InvoiceIn or its FastInvoiceIn) and
the ids the database gave it -> the `InvoiceIssued` record; `dunning.events.envelope` wraps it. The
two write paths serialise that envelope:
- `OutboxRow` (one POST): the envelope serialised with a placeholder for the customer id, which
  the single SQL statement splices in once the customer upsert has said which id it is;
- `issued_rows` (bulk import, up to 10,000 invoices a request): the twin of
  `envelope(invoice_issued(...))`, writing the JSON form directly (no record, no second dict, the
  customer object shared by the invoices that have the same one), because the builder's cost per
  invoice was a third of a bulk import's. tests/unit/test_messages.py holds the two equal over
  generated invoices (hypothesis).
"""

import os
import zlib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from opentelemetry import trace

from dunning.contracts import (
    Customer,
    DisputeOpened,
    DisputeResolved,
    HoldPlaced,
    HoldReleased,
    InvoiceIssued,
    InvoiceUpdated,
    InvoiceVoided,
    InvoiceWrittenOff,
    PromiseMade,
)
from dunning.contracts import topic as topic_of_record
from dunning.events import dataschema, envelope
from dunning.money import quantize
from dunning.outbox import LANES, headers_of, lane_of
from dunning_ingest.customer_rules import extras_of
from dunning_ingest.invoice_input import amount_text

INVOICE_ISSUED = InvoiceIssued.TYPE
# Stands in for the customer id when the payload is serialised before the customer upsert has said
# which id that is (single POST: one SQL statement splices it in). It serialises as "\u0001", which
# no text of the invoice can produce before the customer object (those are ids, numbers and the
# external ids, whose quotes and control characters are escaped), so its first occurrence is ours.
_PLACEHOLDER = "\x01"
_SPLIT = b'"customer_id":"\\u0001"'


def topic() -> str:
    return topic_of_record(InvoiceIssued)


def current_traceparent() -> str | None:
    """dunning.tracing.current_traceparent without the propagator's carrier dict (same string)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def invoice_issued(
    tenant_id: str,
    invoice_id: str,
    customer_id: str,
    inv: Any,
    issued_at: datetime,
    extras: Mapping[str, Any] | None = None,
) -> InvoiceIssued:
    """The InvoiceIssued of an accepted invoice. `extras`: the customer's country, subdivision, tags and
    attributes as stored after the write (those set; an invoice that leaves them out keeps the stored
    ones, and the scheduler's segments need them), else those the invoice gives."""
    c = inv.customer
    x = extras if extras is not None else {k: v for k, v in extras_of(c).items() if v is not None}
    tags = x.get("tags")
    return InvoiceIssued(
        invoice_id,
        tenant_id,
        inv.external_id,
        inv.number,
        Customer(
            customer_id,
            c.external_id,
            c.name,
            c.email,
            c.locale,
            c.timezone,
            x.get("country"),
            x.get("subdivision"),
            None if tags is None else tuple(tags),
            x.get("attributes"),
            x.get("phone"),
            x.get("postal_address"),
        ),
        inv.currency,
        Decimal(amount_text(inv)),
        inv.issue_date,
        inv.due_date,
        inv.payment_url,
        inv.metadata,
        issued_at,
    )


def invoice_updated(
    tenant_id: str, row: Any, new: Any, changed: tuple[str, ...], version: int, updated_at: datetime
) -> InvoiceUpdated:
    """The InvoiceUpdated of `row` (the invoice before, repository.INVOICE_SELECT) changed to `new`
    (changes.State)."""
    return InvoiceUpdated(
        row["id"],
        tenant_id,
        row["external_id"],
        version,
        new.number,
        new.customer,
        row["currency"],
        new.amount_due,
        row["issue_date"],
        new.due_date,
        new.payment_url,
        new.metadata,
        changed,
        quantize(row["amount_due"], row["currency"]),
        row["due_date"],
        updated_at,
    )


def invoice_voided(tenant_id: str, row: Any, version: int, reason: str, at: datetime) -> InvoiceVoided:
    return InvoiceVoided(row["id"], tenant_id, row["external_id"], version, reason, at)


def invoice_written_off(
    tenant_id: str, row: Any, version: int, reason: str, amount: Decimal, at: datetime
) -> InvoiceWrittenOff:
    currency = row["currency"]
    return InvoiceWrittenOff(
        row["id"], tenant_id, row["external_id"], version, reason, currency, quantize(amount, currency), at
    )


def hold_placed(hold: Any) -> HoldPlaced:
    """The HoldPlaced of a holds row (or the dict inserted as one)."""
    return HoldPlaced(*(hold[f] for f in HoldPlaced._fields))


def hold_released(hold: Any, released_by: str, released_at: datetime) -> HoldReleased:
    return HoldReleased(
        hold["hold_id"], hold["tenant_id"], hold["customer_id"], hold["invoice_id"], released_by, released_at
    )


def dispute_opened(dispute: Any) -> DisputeOpened:
    """The DisputeOpened of a disputes row (or the dict inserted as one)."""
    return DisputeOpened(*(dispute[f] for f in DisputeOpened._fields))


def dispute_resolved(dispute: Any) -> DisputeResolved:
    """The DisputeResolved of a resolved disputes row."""
    return DisputeResolved(
        dispute["dispute_id"],
        dispute["invoice_id"],
        dispute["tenant_id"],
        dispute["status"],
        dispute["currency"],
        dispute["credit_amount"],
        dispute["resolved_by"],
        dispute["note"],
        dispute["resolved_at"],
    )


def promise_made(promise: Any) -> PromiseMade:
    """The PromiseMade of a promises row (or the dict inserted as one)."""
    return PromiseMade(*(promise[f] for f in PromiseMade._fields))


class OutboxRow:
    """One InvoiceIssued outbox row whose payload waits for the customer id (see _PLACEHOLDER)."""

    __slots__ = ("lane", "event_id", "headers", "head", "tail")

    def __init__(self, tenant_id: str, invoice_id: str, inv: Any, issued_at: str, traceparent: str | None):
        # The customer's optional fields are left out here: the statement writes the stored ones in (the
        # invoice may leave them out), right after the customer id (repository.invoices._CREATE_ONE).
        env = envelope(
            invoice_issued(tenant_id, invoice_id, _PLACEHOLDER, inv, datetime.fromisoformat(issued_at), extras={}),
            time=issued_at,
            traceparent=traceparent,
        )
        payload = orjson.dumps(env)
        cut = payload.index(_SPLIT) + len(b'"customer_id":"')
        self.lane = lane_of(invoice_id)
        self.event_id = env["id"]
        self.headers = headers_of(env)
        self.head, self.tail = payload[:cut], payload[cut + len(b"\\u0001") + 1 :]  # the tail after its quote

    def payload(self, customer_id: str, extras: Mapping[str, Any] | None = None) -> bytes:
        """The payload as the statement writes it (extras: the customer's stored optional fields)."""
        more = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in sorted((extras or {}).items()))
        return self.head + customer_id.encode() + b'"' + more + self.tail


_V4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # the version nibble of a UUID 4
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # and its RFC 4122 variant bits


def new_uuids(n: int) -> list[str]:
    """n random (version 4) UUIDs as strings, like str(uuid.uuid4()), from one urandom call."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_V4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


_DATASCHEMA = dataschema(INVOICE_ISSUED)


def issued_rows(
    tenant_id: str,
    issued: list[tuple[str, str, Any]],
    issued_at: str,
    traceparent: str | None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list, ...]:
    """Twin of `envelope(invoice_issued(...))` for a bulk import: the outbox columns
    (repository.add_to_outbox: lane, key, event_id, headers, payload) of the InvoiceIssued of
    (invoice_id, customer_id, invoice)s, written in their JSON form directly. `extras`: customer id ->
    its stored optional fields (repository.upsert_customers), as invoice_issued's."""
    lanes, keys, ids, hdrs_, payloads = [], [], [], [], []
    customers: dict[tuple[str, int], dict[str, Any]] = {}
    crc32, dumps = zlib.crc32, orjson.dumps
    for event_id, (invoice_id, customer_id, inv) in zip(new_uuids(len(issued)), issued, strict=True):
        c = inv.customer
        customer = customers.get((customer_id, id(c)))  # by identity: a CustomerIn (pydantic) is unhashable
        if customer is None:
            customer = customers[(customer_id, id(c))] = {
                "customer_id": customer_id,
                "external_id": c.external_id,
                "name": c.name,
                "email": c.email,
                "locale": c.locale,
                "timezone": c.timezone,
            }
            stored = extras.get(customer_id) if extras is not None else None
            if stored is None:
                stored = {k: v for k, v in extras_of(c).items() if v is not None}
            if stored:
                customer.update(stored)
        env = {
            "specversion": "1.0",
            "id": event_id,
            "source": InvoiceIssued.SOURCE,
            "type": INVOICE_ISSUED,
            "subject": invoice_id,
            "time": issued_at,
            "datacontenttype": "application/json",
            "dataschema": _DATASCHEMA,
            "tenantid": tenant_id,
            "data": {
                "invoice_id": invoice_id,
                "tenant_id": tenant_id,
                "external_id": inv.external_id,
                "number": inv.number,
                "customer": customer,
                "currency": inv.currency,
                "amount_due": amount_text(inv),
                "issue_date": inv.issue_date,
                "due_date": inv.due_date,
                "payment_url": inv.payment_url,
                "metadata": inv.metadata,
                "issued_at": issued_at,
            },
        }
        if traceparent:
            env["traceparent"] = traceparent
            hdrs_.append(f'{{"ce_type":"{INVOICE_ISSUED}","ce_id":"{event_id}","traceparent":"{traceparent}"}}')
        else:
            hdrs_.append(f'{{"ce_type":"{INVOICE_ISSUED}","ce_id":"{event_id}"}}')
        lanes.append(crc32(invoice_id.encode()) % LANES)
        keys.append(invoice_id)
        ids.append(event_id)
        payloads.append(dumps(env))
    return lanes, keys, ids, hdrs_, payloads
