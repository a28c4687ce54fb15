"""SQL of re-planning: the timers of the invoices being re-planned (locked), the re-planned timers
written back in one statement, and the jobs that apply a policy version to a tenant's open invoices
batch by batch (`replans`)."""

import asyncpg
import orjson

from dunning_scheduler.repository.changes import REPLAN_COLUMNS
from dunning_scheduler.repository.firing import WAKE_AHEAD_SECONDS
from dunning_scheduler.repository.invoices import TIMER_COLUMNS

_LOCK_TIMERS = (
    f"SELECT {TIMER_COLUMNS} FROM timers WHERE invoice_id = ANY($1::text[])"
    " ORDER BY invoice_id, sequence, channel FOR UPDATE"
)


async def lock_timers(conn: asyncpg.Connection, invoice_ids: list[str]) -> list[asyncpg.Record]:
    """The timers of these invoices, locked until the transaction ends: the firing loop skips them
    meanwhile, and one it fired just before is seen `fired` (the caller locked the invoices first)."""
    return await conn.fetch(_LOCK_TIMERS, invoice_ids)


# The re-planned timers, one JSON array of rows (REPLANNED_FIELDS): a row whose stage_id exists is
# updated (moved, revived or dropped), the others are inserted with their invoice's payments-gate
# position (the one its InvoiceIssued was read at, shared by its timers). Then the invoices take the
# policy version they are now planned with, and the firing loop is woken if a timer is due now.
REPLANNED_FIELDS = (
    "stage_id",
    "tenant_id",
    "invoice_id",
    "stage",
    "sequence",
    "channel",
    "template",
    "scheduled_at",
    "state",
    "reason",
    "policy_version",
    "added",
)
_WRITE_REPLANNED = f"""
WITH m AS MATERIALIZED (
    SELECT x->>0 AS stage_id, x->>1 AS tenant_id, x->>2 AS invoice_id, x->>3 AS stage, (x->>4)::int AS sequence,
           x->>5 AS channel, x->>6 AS template, (x->>7)::timestamptz AS scheduled_at, x->>8 AS state,
           x->>9 AS reason, (x->>10)::int AS policy_version, (x->>11)::boolean AS added
    FROM jsonb_array_elements($1::text::jsonb) AS x
), moved AS (
    UPDATE timers AS t SET stage = m.stage, sequence = m.sequence, template = m.template,
        scheduled_at = coalesce(m.scheduled_at, t.scheduled_at), state = m.state, reason = m.reason,
        cancelled_at = CASE WHEN m.state = 'cancelled' THEN now() END, policy_version = m.policy_version
    FROM m WHERE t.stage_id = m.stage_id AND NOT m.added
    RETURNING 1
), added AS (
    INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                        reason, policy_version, gate_partition, gate_offset)
    SELECT m.stage_id, m.tenant_id, m.invoice_id, m.stage, m.sequence, m.channel, m.template, m.scheduled_at,
           m.state, m.reason, m.policy_version, g.gate_partition, g.gate_offset
    FROM m LEFT JOIN LATERAL (
        SELECT gate_partition, gate_offset FROM timers AS o WHERE o.invoice_id = m.invoice_id LIMIT 1) AS g ON true
    WHERE m.added
    RETURNING 1
), planned_with AS (
    UPDATE invoices AS i SET policy_id = p.policy_id, policy_version = p.policy_version,
        policy_is_default = p.is_default, updated_at = now()
    FROM (SELECT x->>0 AS invoice_id, x->>1 AS policy_id, (x->>2)::int AS policy_version,
                 (x->>3)::boolean AS is_default
          FROM jsonb_array_elements($2::text::jsonb) AS x) AS p
    WHERE i.invoice_id = p.invoice_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM added) AS timers,
       (SELECT count(*) FROM planned_with) AS invoices,
       (SELECT count(*) FROM (SELECT pg_notify($3 || '_' || current_schema(), '')
                              WHERE EXISTS (SELECT 1 FROM m WHERE m.state = 'scheduled'
                                           AND m.scheduled_at <= now() + make_interval(secs => {WAKE_AHEAD_SECONDS})))
                             AS woken) AS woken
"""


async def write_replanned(
    conn: asyncpg.Connection, timers: list[list], invoices: list[list], *, notify_channel: str
) -> None:
    """`timers`: rows in REPLANNED_FIELDS order; `invoices`: [invoice_id, policy_id, policy_version,
    is_default] of each invoice re-planned. One round trip."""
    await conn.fetchrow(
        _WRITE_REPLANNED, orjson.dumps(timers).decode(), orjson.dumps(invoices).decode(), notify_channel
    )


# -- apply_to: open_invoices -------------------------------------------------------------------

# (an invoice handed to a collection agency, agency_stop.py, is never planned again: not open for a new policy)
_OPEN = "i.status = 'open' AND NOT i.settled AND i.with_agency_at IS NULL AND i.planned_at IS NOT NULL"
REPLAN_JOB_COLUMNS = (
    "replan_id, tenant_id, policy_key, policy_version, status, invoices_total, invoices_done, invoices_rescheduled,"
    " batches, created_at, updated_at, finished_at"
)
_CREATE_REPLAN = f"""
WITH superseded AS (
    UPDATE replans SET status = 'superseded', updated_at = now(), finished_at = now()
    WHERE tenant_id = $2 AND policy_key = $4 AND status = 'running'
    RETURNING 1
)
INSERT INTO replans (replan_id, tenant_id, policy_version, invoices_total, policy_key)
SELECT $1, $2, $3, (SELECT count(*) FROM invoices AS i WHERE i.tenant_id = $2 AND i.policy_key = $4 AND {_OPEN}), $4
RETURNING {REPLAN_JOB_COLUMNS}
"""


async def create_replan(
    conn: asyncpg.Connection, replan_id: str, tenant_id: str, version: int, *, policy_key: str = ""
) -> asyncpg.Record:
    """A job applying `version` of the policy `policy_key` ('' the tenant's default) to the tenant's
    open invoices planned with that policy; a running one of the tenant for that policy stops
    (superseded). Wakes the replan loop at commit."""
    job = await conn.fetchrow(_CREATE_REPLAN, replan_id, tenant_id, version, policy_key)
    await conn.execute("SELECT pg_notify('scheduler_replans_' || current_schema(), '')")
    return job


_REPLAN_OF = f"SELECT {REPLAN_JOB_COLUMNS} FROM replans WHERE tenant_id = $1 AND replan_id = $2"


async def replan_of(conn: asyncpg.Connection, tenant_id: str, replan_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_REPLAN_OF, tenant_id, replan_id)


_CLAIM_REPLAN = (
    f"SELECT {REPLAN_JOB_COLUMNS}, after_invoice_id FROM replans WHERE status = 'running'"
    " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)


async def claim_replan(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The oldest running job no other replica is working on, locked for this batch's transaction."""
    return await conn.fetchrow(_CLAIM_REPLAN)


_OPEN_INVOICES_AFTER = f"""
SELECT {REPLAN_COLUMNS} FROM invoices AS i
WHERE i.tenant_id = $1 AND i.invoice_id > $2 AND i.policy_key = $4 AND {_OPEN}
ORDER BY i.invoice_id LIMIT $3
FOR UPDATE
"""


async def open_invoices_after(
    conn: asyncpg.Connection, tenant_id: str, after_invoice_id: str, limit: int, *, policy_key: str = ""
) -> list[asyncpg.Record]:
    """The next `limit` open, unsettled, planned invoices of the tenant by id that were planned with
    the policy `policy_key`, locked (as a payment locks one, so a settlement waits for this batch
    and then cancels what it wrote)."""
    return await conn.fetch(_OPEN_INVOICES_AFTER, tenant_id, after_invoice_id, limit, policy_key)


_ADVANCE_REPLAN = """
UPDATE replans SET after_invoice_id = $2, invoices_done = invoices_done + $3,
    invoices_rescheduled = invoices_rescheduled + $4, batches = batches + 1, updated_at = now(),
    status = CASE WHEN $5 THEN 'done' ELSE status END, finished_at = CASE WHEN $5 THEN now() END
WHERE replan_id = $1
"""


async def advance_replan(
    conn: asyncpg.Connection, replan_id: str, *, after_invoice_id: str, done: int, rescheduled: int, finished: bool
) -> None:
    await conn.execute(_ADVANCE_REPLAN, replan_id, after_invoice_id, done, rescheduled, finished)


_PLANNING_INPUTS = (
    "SELECT invoice_id, policy_key, customer, amount_due, currency FROM invoices WHERE invoice_id = ANY($1::text[])"
)


async def planning_inputs(conn: asyncpg.Connection, invoice_ids: list[str]) -> dict[str, asyncpg.Record]:
    """What re-planning needs besides REPLAN_COLUMNS to plan as the planner did: the policy's key,
    the customer (its calendar and window) and the amount (the minimum-balance threshold)."""
    return {r["invoice_id"]: r for r in await conn.fetch(_PLANNING_INPUTS, invoice_ids)}
