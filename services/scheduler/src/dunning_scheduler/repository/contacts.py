"""SQL of the firing rules: the contacts a customer received, timers deferred or skipped at firing,
the customer's later timers pulled into a consolidated notice (through the firing gate), and the
customer's other open overdue invoices a notice lists. All run in the firing transaction."""

from datetime import date, datetime, timedelta

import asyncpg

from dunning_scheduler.repository.firing import _FIRE_DUE

_RECENT_CONTACTS = (
    "SELECT contacted_at FROM customer_contacts"
    " WHERE tenant_id = $1 AND customer_id = $2 AND contacted_at > $3 ORDER BY contacted_at"
)


# Longer than any cap period or quiet period (at most 366 days): what the caps can still count.
LOOKBACK = timedelta(days=400)


async def recent_contacts(conn: asyncpg.Connection, tenant_id: str, customer_id: str, now: datetime) -> list:
    """The customer's contacts the caps can still count at `now` (within LOOKBACK), oldest first."""
    return [r["contacted_at"] for r in await conn.fetch(_RECENT_CONTACTS, tenant_id, customer_id, now - LOOKBACK)]


_ADD_CONTACT = (
    "INSERT INTO customer_contacts (contact_id, tenant_id, customer_id, contacted_at, notice_id, stage_ids)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)


async def add_contact(
    conn: asyncpg.Connection,
    contact_id: str,
    tenant_id: str,
    customer_id: str,
    at: datetime,
    notice_id: str | None,
    stage_ids: list[str],
) -> None:
    await conn.execute(_ADD_CONTACT, contact_id, tenant_id, customer_id, at, notice_id, stage_ids)


_LOCK_CUSTOMER = "SELECT pg_advisory_xact_lock(hashtext('scheduler.customer_contacts'), hashtext($1))"


async def lock_customer_contacts(conn: asyncpg.Connection, customer_id: str) -> None:
    """Serialise the firing rules of one customer across replicas (caps are never exceeded)."""
    await conn.execute(_LOCK_CUSTOMER, customer_id)


_DEFER = "UPDATE timers SET state = 'scheduled', fired_at = NULL, scheduled_at = $2 WHERE stage_id = ANY($1::text[])"


async def defer(conn: asyncpg.Connection, stage_ids: list[str], at: datetime) -> None:
    """Put claimed timers back, due at `at` (later than planned: always safe for the cancel guarantee)."""
    await conn.execute(_DEFER, stage_ids, at)


_SKIP = "UPDATE timers SET state = 'skipped', fired_at = NULL, reason = $2 WHERE stage_id = ANY($1::text[])"


async def skip(conn: asyncpg.Connection, stage_ids: list[str], reason: str) -> None:
    await conn.execute(_SKIP, stage_ids, reason)


_SET_NOTICE = (
    "UPDATE timers AS t SET notice_id = n.notice_id"
    " FROM unnest($1::text[], $2::text[]) AS n(stage_id, notice_id) WHERE t.stage_id = n.stage_id"
)


async def set_notices(conn: asyncpg.Connection, stage_ids: list[str], notice_ids: list[str]) -> None:
    await conn.execute(_SET_NOTICE, stage_ids, notice_ids)


# The customer's other scheduled timers due before the horizon, claimed through the firing query's
# own gate conditions (closed, settled, paused invoices stay; the gate's watermark must cover the
# notice's time, the reconciliation position each invoice's), and moved to the notice's time ($5,
# the earliest scheduled_at of the triggering timers, itself past the gate), then marked fired.
_PULL = (
    _FIRE_DUE.replace(
        "WHERE d.state = 'scheduled' AND d.scheduled_at <= now()",
        "WHERE d.state = 'scheduled' AND d.scheduled_at < $6 AND d.tenant_id = $7"
        " AND d.invoice_id IN (SELECT invoice_id FROM invoices WHERE tenant_id = $7 AND customer_id = $8)",
    )
    .replace("AND (NOT $2 OR (d.scheduled_at <= gate.watermark", "AND (NOT $2 OR ($5 <= gate.watermark")
    .replace("SET state = 'fired', fired_at = now()", "SET state = 'fired', fired_at = now(), scheduled_at = $5")
)
assert _PULL.count("$5") == 2 and "$8" in _PULL, "the firing query changed: review _PULL"


async def pull_into_notice(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    customer_id: str,
    at: datetime,
    horizon: datetime,
    gated: bool,
    payments_topic: str,
    sources: list[str],
    limit: int = 1000,
) -> list[asyncpg.Record]:
    return await conn.fetch(_PULL, payments_topic, gated, limit, sources, at, horizon, tenant_id, customer_id)


_OVERDUE = """
SELECT i.invoice_id, i.external_id, i.number, i.currency, i.amount_due, i.balance, i.issue_date, i.due_date,
       i.payment_url
FROM invoices AS i
WHERE i.tenant_id = $1 AND i.customer_id = $2 AND i.status = 'open' AND NOT i.settled AND i.due_date < $3
  AND NOT (i.invoice_id = ANY($4::text[]))
  AND NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.invoice_id = i.invoice_id)
  AND NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.scope = 'customer'
                  AND p.tenant_id = i.tenant_id AND p.customer_id = i.customer_id)
ORDER BY i.due_date, i.invoice_id
"""


async def other_overdue(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, today: date, exclude: list[str]
) -> list[asyncpg.Record]:
    """The customer's open, unpaused invoices due before `today` (its local date), but `exclude`."""
    return await conn.fetch(_OVERDUE, tenant_id, customer_id, today, exclude)


_NEXT_STAGES = """
SELECT DISTINCT ON (t.invoice_id) t.invoice_id, t.stage, t.scheduled_at
FROM timers AS t
WHERE t.invoice_id = ANY($1::text[]) AND t.state = 'scheduled' AND t.kind = 'policy'
ORDER BY t.invoice_id, t.scheduled_at, t.sequence
"""


async def next_stages(conn: asyncpg.Connection, invoice_ids: list[str]) -> dict[str, asyncpg.Record]:
    """Each invoice's next scheduled policy stage (for StageEscalated.context)."""
    return {r["invoice_id"]: r for r in await conn.fetch(_NEXT_STAGES, invoice_ids)}
