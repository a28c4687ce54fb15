"""SQL for invoices and timers. Every function runs on the caller's connection and transaction."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from dunning_scheduler.planning import PlannedTimer

TIMER_COLUMNS = ("stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,"
                 " fired_at, cancelled_at, reason, policy_version")


@dataclass(frozen=True)
class InvoiceSnapshot:
    invoice_id: str
    tenant_id: str
    external_id: str
    number: str
    currency: str
    amount_due: Decimal
    issue_date: date
    due_date: date
    payment_url: str | None
    customer: dict[str, Any]
    issued_at: datetime
    issued_event_id: str


async def record_issued_invoice(conn: asyncpg.Connection, inv: InvoiceSnapshot, *, policy_id: str,
                                policy_version: int) -> asyncpg.Record | None:
    """Store the snapshot and mark the invoice planned; None if it was planned before (a redelivery
    or a second InvoiceIssued) or belongs to another tenant. A row left by an earlier payment keeps
    its balance and settlement."""
    return await conn.fetchrow(
        """
        INSERT INTO invoices AS i (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,
                                   issue_date, due_date, payment_url, customer, issued_at, issued_event_id,
                                   policy_id, policy_version, planned_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())
        ON CONFLICT (invoice_id) DO UPDATE SET
            external_id = EXCLUDED.external_id, number = EXCLUDED.number, currency = EXCLUDED.currency,
            amount_due = EXCLUDED.amount_due,
            balance = CASE WHEN i.last_payment_acknowledged_at IS NULL THEN EXCLUDED.balance ELSE i.balance END,
            issue_date = EXCLUDED.issue_date, due_date = EXCLUDED.due_date, payment_url = EXCLUDED.payment_url,
            customer = EXCLUDED.customer, issued_at = EXCLUDED.issued_at, issued_event_id = EXCLUDED.issued_event_id,
            policy_id = EXCLUDED.policy_id, policy_version = EXCLUDED.policy_version,
            planned_at = EXCLUDED.planned_at, updated_at = now()
        WHERE i.planned_at IS NULL AND i.tenant_id = EXCLUDED.tenant_id
        RETURNING settled, balance, planned_at
        """,
        inv.invoice_id, inv.tenant_id, inv.external_id, inv.number, inv.currency, inv.amount_due,
        inv.issue_date, inv.due_date, inv.payment_url, inv.customer, inv.issued_at, inv.issued_event_id,
        policy_id, policy_version,
    )


async def invoice_owner(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT tenant_id, currency, planned_at, settled, last_payment_acknowledged_at FROM invoices"
        " WHERE invoice_id = $1", invoice_id,
    )


async def insert_timers(conn: asyncpg.Connection, tenant_id: str, invoice_id: str, policy_version: int,
                        timers: list[PlannedTimer]) -> None:
    if not timers:
        return
    await conn.execute(
        """
        INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at,
                            state, reason, cancelled_at, policy_version)
        SELECT s, $1, $2, st, q, c, t, at, state, r, CASE WHEN state = 'cancelled' THEN now() END, $3
        FROM unnest($4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
                    $11::text[]) AS u(s, st, q, c, t, at, state, r)
        """,
        tenant_id, invoice_id, policy_version,
        [t.stage_id for t in timers], [t.stage for t in timers], [t.sequence for t in timers],
        [t.channel for t in timers], [t.template for t in timers], [t.scheduled_at for t in timers],
        [t.state for t in timers], [t.reason for t in timers],
    )


async def apply_payment(conn: asyncpg.Connection, *, invoice_id: str, tenant_id: str, currency: str,
                        balance: Decimal, settled: bool, payment_id: str,
                        acknowledged_at: datetime) -> asyncpg.Record | None:
    """Apply a payment unless a later one (by acknowledged_at) was applied already; a settled
    invoice stays settled. None: not applied (stale, or another tenant's / currency's invoice)."""
    return await conn.fetchrow(
        """
        INSERT INTO invoices AS i (invoice_id, tenant_id, currency, balance, settled, settled_at,
                                   last_payment_id, last_payment_acknowledged_at)
        VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 THEN now() END, $6, $7)
        ON CONFLICT (invoice_id) DO UPDATE SET
            balance = EXCLUDED.balance,
            settled = i.settled OR EXCLUDED.settled,
            settled_at = COALESCE(i.settled_at, EXCLUDED.settled_at),
            last_payment_id = EXCLUDED.last_payment_id,
            last_payment_acknowledged_at = EXCLUDED.last_payment_acknowledged_at,
            updated_at = now()
        WHERE i.tenant_id = EXCLUDED.tenant_id
          AND (i.currency IS NULL OR i.currency = EXCLUDED.currency)
          AND (i.last_payment_acknowledged_at IS NULL
               OR i.last_payment_acknowledged_at < EXCLUDED.last_payment_acknowledged_at
               OR (i.last_payment_acknowledged_at = EXCLUDED.last_payment_acknowledged_at
                   AND EXCLUDED.balance < i.balance))
        RETURNING settled, balance, planned_at
        """,
        invoice_id, tenant_id, currency, balance, settled, payment_id, acknowledged_at,
    )


async def cancel_pending(conn: asyncpg.Connection, invoice_id: str, reason: str) -> list[asyncpg.Record]:
    """Cancel every still-scheduled timer of the invoice (fired ones are history and stay)."""
    rows = await conn.fetch(
        "UPDATE timers SET state = 'cancelled', cancelled_at = now(), reason = $2"
        " WHERE invoice_id = $1 AND state = 'scheduled'"
        " RETURNING stage_id, stage, sequence, channel, scheduled_at, cancelled_at",
        invoice_id, reason,
    )
    return sorted(rows, key=lambda r: (r["sequence"], r["channel"]))


# The firing query, in one place: a gate (pause, payments watermark, send windows) is one more
# condition in `due`. SKIP LOCKED lets several scheduler replicas fire side by side, each timer once.
_FIRE_DUE = """
UPDATE timers AS t SET state = 'fired', fired_at = now()
FROM invoices AS i
WHERE t.stage_id = ANY(ARRAY(
        SELECT stage_id FROM timers
        WHERE state = 'scheduled' AND scheduled_at <= now()
        ORDER BY scheduled_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED))
  AND i.invoice_id = t.invoice_id
RETURNING t.stage_id, t.tenant_id, t.invoice_id, t.stage, t.sequence, t.channel, t.template, t.scheduled_at,
          t.fired_at, i.external_id, i.number, i.currency, i.amount_due, i.balance, i.issue_date, i.due_date,
          i.payment_url, i.customer
"""


async def fire_due(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Claim up to `limit` due timers and mark them fired (inside the caller's transaction)."""
    return await conn.fetch(_FIRE_DUE, limit)


async def next_due_at(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval("SELECT min(scheduled_at) FROM timers WHERE state = 'scheduled'")


async def timers_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {TIMER_COLUMNS} FROM timers WHERE tenant_id = $1 AND invoice_id = $2"
        " ORDER BY sequence, channel", tenant_id, invoice_id,
    )


async def invoice_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT invoice_id, number, currency, amount_due, balance, due_date, settled, settled_at, planned_at,"
        " policy_id, policy_version FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id, invoice_id,
    )
