"""The stop events of an invoice's timeline that other services report (stop_events): the
scheduler's pauses, resumes and plan outcomes, the notifier's dropped deliveries. One row per event
and invoice; a redelivered event adds nothing (its id is the key)."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg
import orjson


class StopEvent(NamedTuple):
    """One timeline entry of an invoice (a row of stop_events)."""

    invoice_id: str
    kind: str  # paused | resumed | reminder_cancelled | payment_plan_* | instalment_missed
    at: datetime
    reference: str | None = None  # the hold, dispute, promise or plan id (reminder_cancelled: the stage id)
    reason: str | None = None
    amount: Decimal | None = None
    data: dict[str, Any] | None = None


_RECORD = """
INSERT INTO stop_events (invoice_id, event_id, tenant_id, kind, at, reference, reason, amount, data)
SELECT e.invoice_id, $1, $2, e.kind, e.at, e.reference, e.reason, e.amount, e.data
  FROM json_to_recordset($3::text::json)
       AS e(invoice_id text, kind text, at timestamptz, reference text, reason text, amount numeric, data jsonb)
  JOIN invoices AS i ON i.id = e.invoice_id AND i.tenant_id = $2
ON CONFLICT (invoice_id, event_id) DO NOTHING
"""


async def record_stop_events(
    conn: asyncpg.Connection, tenant_id: str, event_id: str, entries: Sequence[StopEvent]
) -> int:
    """Append the entries of one event (one per invoice it concerns). Returns how many were written: an
    entry for an unknown invoice, or another tenant's, is not (the inbox keeps redeliveries out)."""
    if not entries:
        return 0
    rows = [e._asdict() for e in entries]
    status = await conn.execute(_RECORD, event_id, tenant_id, orjson.dumps(rows, default=str).decode())
    return int(status.rsplit(" ", 1)[1])


_OF_INVOICE = "SELECT * FROM stop_events WHERE invoice_id = $1 ORDER BY at, event_id"


async def stop_events_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_OF_INVOICE, invoice_id)


# Whether anything stopped or paused the invoice: most invoices never are, and their detail then
# skips the five statements that read the stops (one round trip instead of five).
_ANY_STOPS = """
SELECT EXISTS (SELECT 1 FROM holds AS h WHERE h.invoice_id = $1 OR (h.invoice_id IS NULL AND h.customer_id = $2))
    OR EXISTS (SELECT 1 FROM disputes WHERE invoice_id = $1)
    OR EXISTS (SELECT 1 FROM promises WHERE invoice_id = $1)
    OR EXISTS (SELECT 1 FROM payment_plan_invoices WHERE invoice_id = $1)
    OR EXISTS (SELECT 1 FROM stop_events WHERE invoice_id = $1)
"""


async def any_stops(conn: asyncpg.Connection, invoice_id: str, customer_id: str) -> bool:
    return bool(await conn.fetchval(_ANY_STOPS, invoice_id, customer_id))
