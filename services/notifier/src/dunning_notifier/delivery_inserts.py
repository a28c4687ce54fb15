"""Recording the deliveries to make (StageEscalated): one statement for one delivery or a run."""

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from dunning_notifier.repository import _CANCELLED_COLUMNS

# A delivery of an invoice the notifier knows stopped for good is recorded `cancelled` at once (a
# StageEscalated redelivered or re-emitted after the terminal stop): its row, read in the same
# statement. A pause does not (handlers.py: what the scheduler fires under a pause is meant to go).
# One statement for one delivery or many: `rows` is a FROM item `u` with these columns.
_DELIVERY_COLUMNS = (
    "delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template, recipient, payload,"
    " source_event_id, traceparent, customer_id"
)
_DELIVERY_TYPES = ("text",) * 8 + ("jsonb", "uuid", "text", "text")


def _insert_deliveries(rows: str) -> str:
    return (
        f"INSERT INTO deliveries AS d ({_DELIVERY_COLUMNS}, state, cancel_reason, cancel_cause_event_id, cancelled_at)"
        " SELECT u.delivery_id, u.tenant_id, u.invoice_id, u.stage_id, u.stage, u.channel, u.template, u.recipient,"
        " u.payload::jsonb, u.source_event_id, u.traceparent, u.customer_id,"
        " CASE WHEN s.reason IS NULL THEN 'pending' ELSE 'cancelled' END, s.reason, s.cause_event_id,"
        " CASE WHEN s.reason IS NOT NULL THEN now() END"
        f" FROM {rows} AS u({_DELIVERY_COLUMNS}) LEFT JOIN invoice_stops s"
        " ON s.tenant_id = u.tenant_id AND s.invoice_id = u.invoice_id AND s.state = 'stopped'"
        f" ON CONFLICT (tenant_id, invoice_id, stage, channel) DO NOTHING RETURNING {_CANCELLED_COLUMNS}"
    )


_INSERT_DELIVERY = _insert_deliveries(
    "(VALUES (" + ", ".join(f"${n}::{t}" for n, t in enumerate(_DELIVERY_TYPES, 1)) + "))"
)
# The payloads as JSON text (the pool's codec would encode each element of a jsonb[] apart).
_INSERT_DELIVERIES = _insert_deliveries(
    "unnest(" + ", ".join(f"${n}::{t.replace('jsonb', 'text')}[]" for n, t in enumerate(_DELIVERY_TYPES, 1)) + ")"
)


async def insert_delivery(
    conn: asyncpg.Connection,
    *,
    delivery_id: str,
    tenant_id: str,
    invoice_id: str,
    stage_id: str,
    stage: str,
    channel: str,
    template: str,
    recipient: str | None,
    payload: dict[str, Any],
    source_event_id: str,
    traceparent: str | None,
) -> asyncpg.Record | None:
    """Record a delivery to make (`_CANCELLED_COLUMNS`: its state is `cancelled` if the invoice is
    stopped for good); None if this (invoice, stage, channel) already has one. Its customer (whose
    current contacts the dispatcher looks up) is the payload's."""
    return await conn.fetchrow(
        _INSERT_DELIVERY,
        delivery_id,
        tenant_id,
        invoice_id,
        stage_id,
        stage,
        channel,
        template,
        recipient,
        payload,
        source_event_id,
        traceparent,
        _customer_of(payload),
    )


async def insert_deliveries(conn: asyncpg.Connection, deliveries: Sequence[dict[str, Any]]) -> list[asyncpg.Record]:
    """`insert_delivery` for many (each a dict of its keyword arguments; no two with the same
    tenant, invoice, stage and channel): the rows recorded, in no particular order."""
    if not deliveries:
        return []
    rows = [
        {**d, "payload": orjson.dumps(d["payload"], default=str).decode(), "customer_id": _customer_of(d["payload"])}
        for d in deliveries
    ]
    return await conn.fetch(_INSERT_DELIVERIES, *([row[c] for row in rows] for c in _DELIVERY_COLUMNS.split(", ")))


def _customer_of(payload: dict[str, Any]) -> str | None:
    return (payload.get("customer") or {}).get("customer_id")
