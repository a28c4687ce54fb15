"""The events invoice-ingest publishes (through the outbox): InvoiceIssued.

The envelope is built here directly — the same fields, in the same order, as dunning.events.new_event
— from data already in its JSON form, and serialised once: new_event's dumps-then-loads of the data
was a third of a bulk import's cost. Tests validate what comes out against the contract.
"""

import os
import uuid
import zlib
from datetime import datetime
from typing import Any

import orjson
from opentelemetry import trace

from dunning.clock import isoformat
from dunning.events import topic_for_type
from dunning.outbox import LANES, lane_of

from dunning_ingest.validation import amount_text

SOURCE = "/invoice-ingest"
INVOICE_ISSUED = "dunning.InvoiceIssued.v1"
DATASCHEMA = "urn:dunning:schema:InvoiceIssued:1"
# Stands in for the customer id when the payload is serialised before the customer upsert has said
# which id that is (single POST: one SQL statement splices it in). It serialises as "\u0001", which
# no text of the invoice can produce before the customer object (those are ids, numbers and the
# external ids, whose quotes and control characters are escaped), so its first occurrence is ours.
_PLACEHOLDER = "\x01"
_SPLIT = b'"customer_id":"\\u0001"'


def topic() -> str:
    return topic_for_type()[INVOICE_ISSUED]


def current_traceparent() -> str | None:
    """dunning.tracing.current_traceparent without the propagator's carrier dict (same string)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _data(tenant_id: str, invoice_id: str, customer_id: str, inv: Any, issued_at: str) -> dict[str, Any]:
    """InvoiceIssued data, already in its JSON form (strings for money, dates and times)."""
    c = inv.customer
    return {
        "invoice_id": invoice_id,
        "tenant_id": tenant_id,
        "external_id": inv.external_id,
        "number": inv.number,
        "customer": {"customer_id": customer_id, "external_id": c.external_id, "name": c.name, "email": c.email,
                     "locale": c.locale, "timezone": c.timezone},
        "currency": inv.currency,
        "amount_due": amount_text(inv),
        "issue_date": inv.issue_date.isoformat(),
        "due_date": inv.due_date.isoformat(),
        "payment_url": inv.payment_url,
        "metadata": inv.metadata,
        "issued_at": issued_at,
    }


def _envelope(event_id: str, tenant_id: str, invoice_id: str, time: str, data: dict[str, Any],
              traceparent: str | None) -> dict[str, Any]:
    envelope = {
        "specversion": "1.0", "id": event_id, "source": SOURCE, "type": INVOICE_ISSUED, "subject": invoice_id,
        "time": time, "datacontenttype": "application/json", "dataschema": DATASCHEMA, "tenantid": tenant_id,
        "data": data,
    }
    if traceparent:
        envelope["traceparent"] = traceparent
    return envelope


def invoice_issued(tenant_id: str, invoice_id: str, customer_id: str, inv: Any, issued_at: datetime) -> dict[str, Any]:
    """The InvoiceIssued envelope (a dict, as new_event returns it)."""
    issued = isoformat(issued_at)
    return _envelope(str(uuid.uuid4()), tenant_id, invoice_id, issued,
                     _data(tenant_id, invoice_id, customer_id, inv, issued), current_traceparent())


def headers(event_id: str, traceparent: str | None) -> dict[str, str]:
    """The outbox row's headers, as dunning.outbox.add_many writes them."""
    hdrs = {"ce_type": INVOICE_ISSUED, "ce_id": event_id}
    if traceparent:
        hdrs["traceparent"] = traceparent
    return hdrs


class OutboxRow:
    """One InvoiceIssued outbox row whose payload waits for the customer id (see _PLACEHOLDER)."""

    __slots__ = ("lane", "event_id", "headers", "head", "tail")

    def __init__(self, tenant_id: str, invoice_id: str, inv: Any, issued_at: str, traceparent: str | None):
        event_id = str(uuid.uuid4())
        payload = orjson.dumps(_envelope(event_id, tenant_id, invoice_id, issued_at,
                                         _data(tenant_id, invoice_id, _PLACEHOLDER, inv, issued_at), traceparent))
        cut = payload.index(_SPLIT) + len(b'"customer_id":"')
        self.lane = lane_of(invoice_id)
        self.event_id = event_id
        self.headers = headers(event_id, traceparent)
        self.head, self.tail = payload[:cut], payload[cut + len(b"\\u0001"):]

    def payload(self, customer_id: str) -> bytes:
        return self.head + customer_id.encode() + self.tail


_V4 = bytes((b & 0x0F) | 0x40 for b in range(256))       # the version nibble of a UUID 4
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # and its RFC 4122 variant bits


def new_uuids(n: int) -> list[str]:
    """n random (version 4) UUIDs as strings, like str(uuid.uuid4()), from one urandom call."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_V4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def issued_rows(tenant_id: str, issued: list[tuple[str, str, Any]], issued_at: str,
                traceparent: str | None) -> tuple[list, ...]:
    """The outbox columns (repository.add_to_outbox) of InvoiceIssued for (invoice_id, customer_id, invoice)s:
    _envelope(..., _data(...)) inlined, with the customer object shared by the invoices that have the
    same one (orjson writes it out for each), since this runs for every invoice of a bulk import."""
    lanes, keys, ids, hdrs_, payloads = [], [], [], [], []
    customers: dict[tuple[str, Any], dict[str, Any]] = {}
    crc32, dumps = zlib.crc32, orjson.dumps
    for event_id, (invoice_id, customer_id, inv) in zip(new_uuids(len(issued)), issued):
        c = inv.customer
        customer = customers.get((customer_id, c))
        if customer is None:
            customer = customers[(customer_id, c)] = {
                "customer_id": customer_id, "external_id": c.external_id, "name": c.name, "email": c.email,
                "locale": c.locale, "timezone": c.timezone}
        envelope = {
            "specversion": "1.0", "id": event_id, "source": SOURCE, "type": INVOICE_ISSUED, "subject": invoice_id,
            "time": issued_at, "datacontenttype": "application/json", "dataschema": DATASCHEMA,
            "tenantid": tenant_id,
            "data": {"invoice_id": invoice_id, "tenant_id": tenant_id, "external_id": inv.external_id,
                     "number": inv.number, "customer": customer, "currency": inv.currency,
                     "amount_due": amount_text(inv), "issue_date": inv.issue_date, "due_date": inv.due_date,
                     "payment_url": inv.payment_url, "metadata": inv.metadata, "issued_at": issued_at},
        }
        if traceparent:
            envelope["traceparent"] = traceparent
            hdrs_.append(f'{{"ce_type":"{INVOICE_ISSUED}","ce_id":"{event_id}","traceparent":"{traceparent}"}}')
        else:
            hdrs_.append(f'{{"ce_type":"{INVOICE_ISSUED}","ce_id":"{event_id}"}}')
        lanes.append(crc32(invoice_id.encode()) % LANES)
        keys.append(invoice_id)
        ids.append(event_id)
        payloads.append(dumps(envelope))
    return lanes, keys, ids, hdrs_, payloads
