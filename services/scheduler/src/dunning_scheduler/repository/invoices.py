"""SQL of the invoices the scheduler keeps and their timers: planning (one statement for a batch),
the stop statement every stop is made of, and the reads of the API (money applied: `money`)."""

from datetime import datetime

import asyncpg
import orjson

from dunning import outbox
from dunning_scheduler.planning import PlannedTimer
from dunning_scheduler.repository.pauses import LIVE_PAUSE

TIMER_COLUMNS = (
    "stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,"
    " fired_at, cancelled_at, reason, policy_version, kind, context"
)


# Planning, one statement for any number of InvoiceIssued (distinct invoice ids): check that each
# tenant's policy is still the version planned with, store the snapshots (an invoice planned before,
# or another tenant's, is left alone), insert the timers and the DunningPlanned outbox rows of the
# invoices stored, and wake the outbox relay (and the firing loop if a timer is due now). An invoice
# a payment settled first gets its snapshot only: its plan (all cancelled) is the caller's next step.
# The rows travel as one JSON array of arrays (see PLAN_INVOICE_FIELDS, PLAN_TIMER_FIELDS): for
# thousands of values that is several times cheaper, on both sides, than one array parameter per
# column. The outbox payload travels as a JSON string and is stored byte for byte.
# An invoice a pause already covers (a customer hold, or a hold on an invoice not known until now)
# gets its timers `paused`; the caller holds its customer's shared lock (pauses.share_customers).
# One row per input: n, policy_current, settled (null: not stored), paused.
PLAN_INVOICE_FIELDS = (
    "n",
    "invoice_id",
    "tenant_id",
    "external_id",
    "number",
    "currency",
    "amount_due",
    "issue_date",
    "due_date",
    "payment_url",
    "customer",
    "issued_at",
    "issued_event_id",
    "policy_id",
    "policy_version",
    "stored_version",
    "stored_at",
    "due_now",
    "lane",
    "event_id",
    "headers",
    "payload",
    "timers",
    "gate_partition",
    "gate_offset",
    "customer_as_of",
    "policy_key",
    "segment_rule",
    "segment_reason",
)
PLAN_TIMER_FIELDS = ("stage_id", "stage", "sequence", "channel", "template", "scheduled_at", "state", "reason")
_PLAN = f"""
WITH u AS MATERIALIZED (
    SELECT (x->>0)::int AS n, x->>1 AS invoice_id, x->>2 AS tenant_id, x->>3 AS external_id, x->>4 AS number,
           x->>5 AS currency, (x->>6)::numeric AS amount_due, (x->>7)::date AS issue_date,
           (x->>8)::date AS due_date, x->>9 AS payment_url, x->10 AS customer,
           (x->>11)::timestamptz AS issued_at, (x->>12)::uuid AS issued_event_id, x->>13 AS policy_id,
           (x->>14)::int AS policy_version, (x->>15)::int AS stored_version, (x->>16)::timestamptz AS stored_at,
           (x->>17)::boolean AS due_now, (x->>18)::smallint AS lane, (x->>19)::uuid AS event_id,
           x->20 AS headers, convert_to(x->>21, 'UTF8') AS payload, x->22 AS timers,
           (x->>23)::int AS gate_partition, (x->>24)::bigint AS gate_offset,
           coalesce((x->>25)::timestamptz, (x->>11)::timestamptz) AS customer_as_of,
           coalesce(x->>26, '') AS policy_key, x->>27 AS segment_rule, x->>28 AS segment_reason
    FROM jsonb_array_elements($1::text::jsonb) AS x
), current_policy AS (
    SELECT u.n FROM u LEFT JOIN LATERAL (
        SELECT p.version, p.created_at FROM policies AS p WHERE p.tenant_id = u.tenant_id
          AND p.policy_key = u.policy_key
        ORDER BY p.version DESC LIMIT 1) AS p ON true
    WHERE coalesce(p.version, 0) = u.stored_version AND p.created_at IS NOT DISTINCT FROM u.stored_at
), inv AS (
    INSERT INTO invoices AS i (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,
                               issue_date, due_date, payment_url, customer, issued_at, issued_event_id,
                               policy_id, policy_version, planned_at, customer_id, customer_as_of,
                               policy_is_default, policy_key, segment_rule, segment_reason)
    SELECT u.invoice_id, u.tenant_id, u.external_id, u.number, u.currency, u.amount_due, u.amount_due,
           u.issue_date, u.due_date, u.payment_url, u.customer, u.issued_at, u.issued_event_id, u.policy_id,
           u.policy_version, $2, u.customer->>'customer_id', u.customer_as_of, u.stored_version = 0,
           u.policy_key, u.segment_rule, u.segment_reason
    FROM u JOIN current_policy USING (n)
    ORDER BY u.n
    ON CONFLICT (invoice_id) DO UPDATE SET
        external_id = EXCLUDED.external_id, number = EXCLUDED.number, currency = EXCLUDED.currency,
        amount_due = EXCLUDED.amount_due,
        balance = CASE WHEN i.last_payment_acknowledged_at IS NULL THEN EXCLUDED.balance ELSE i.balance END,
        issue_date = EXCLUDED.issue_date, due_date = EXCLUDED.due_date, payment_url = EXCLUDED.payment_url,
        customer = EXCLUDED.customer, issued_at = EXCLUDED.issued_at, issued_event_id = EXCLUDED.issued_event_id,
        policy_id = EXCLUDED.policy_id, policy_version = EXCLUDED.policy_version,
        planned_at = EXCLUDED.planned_at, customer_id = EXCLUDED.customer_id,
        customer_as_of = EXCLUDED.customer_as_of, policy_is_default = EXCLUDED.policy_is_default,
        policy_key = EXCLUDED.policy_key, segment_rule = EXCLUDED.segment_rule,
        segment_reason = EXCLUDED.segment_reason, updated_at = now()
    WHERE i.planned_at IS NULL AND i.tenant_id = EXCLUDED.tenant_id
    RETURNING i.invoice_id, i.settled
), planned AS (
    SELECT u.*, inv.settled, ({LIVE_PAUSE.format(inv="k", extra="")}) AS paused
    FROM u JOIN inv USING (invoice_id)
    CROSS JOIN LATERAL (SELECT u.invoice_id, u.tenant_id, u.customer->>'customer_id' AS customer_id) AS k
), tim AS (
    INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                        reason, policy_version, gate_partition, gate_offset)
    SELECT t->>0, p.tenant_id, p.invoice_id, t->>1, (t->>2)::int, t->>3, t->>4, (t->>5)::timestamptz,
           CASE WHEN p.paused AND t->>6 = 'scheduled' THEN 'paused' ELSE t->>6 END,
           t->>7, p.policy_version, p.gate_partition, p.gate_offset
    FROM planned AS p CROSS JOIN LATERAL jsonb_array_elements(p.timers) AS t
    WHERE NOT p.settled
), box AS (
    {outbox.INSERT}
    SELECT p.lane, $3, p.invoice_id, p.event_id, $4, p.headers, p.payload
    FROM planned AS p WHERE NOT p.settled ORDER BY p.n
    RETURNING 1
), wake AS (
    SELECT {outbox.WAKE_RELAYS} FROM (SELECT 1 FROM box LIMIT 1) AS one
    UNION ALL
    SELECT pg_notify($5 || '_' || current_schema(), '')
    FROM (SELECT 1 FROM planned WHERE due_now AND NOT settled LIMIT 1) AS one
)
SELECT u.n, cp.n IS NOT NULL AS policy_current, p.settled, p.paused, (SELECT count(*) FROM wake) AS woken
FROM u LEFT JOIN current_policy AS cp USING (n) LEFT JOIN planned AS p USING (n)
ORDER BY u.n
"""


def plan_invoice_row(
    *,
    n: int,
    invoice_id: str,
    tenant_id: str,
    external_id: str,
    number: str,
    currency: str,
    amount_due: str,
    issue_date: str,
    due_date: str,
    payment_url: str | None,
    customer: dict,
    issued_at: str,
    issued_event_id: str,
    policy_id: str,
    policy_version: int,
    stored_version: int,
    stored_at: datetime | None,
    due_now: bool,
    lane: int,
    event_id: str,
    headers: dict,
    payload: str,
    timers: list[PlannedTimer],
    gate_partition: int | None,
    gate_offset: int | None,
    customer_as_of: str | None = None,
    policy_key: str = "",
    segment_rule: str | None = None,
    segment_reason: str | None = None,
) -> list:
    """One input row of `plan_invoices`, in the positions `_PLAN` reads (PLAN_INVOICE_FIELDS)."""
    return [
        n,
        invoice_id,
        tenant_id,
        external_id,
        number,
        currency,
        amount_due,
        issue_date,
        due_date,
        payment_url,
        customer,
        issued_at,
        issued_event_id,
        policy_id,
        policy_version,
        stored_version,
        stored_at,
        due_now,
        lane,
        event_id,
        headers,
        payload,
        [
            [t.stage_id, t.stage, t.sequence, t.channel, t.template, t.scheduled_at, t.state, t.reason] for t in timers
        ],  # PLAN_TIMER_FIELDS
        gate_partition,
        gate_offset,
        customer_as_of,  # when the customer snapshot was taken (the event's time); default issued_at
        policy_key,  # '' the tenant's default policy, else the named policy's id
        segment_rule,  # the segment rule that chose the policy (None: the tenant has no rules)
        segment_reason,
    ]


async def plan_invoices(
    conn: asyncpg.Connection,
    invoices: list[list],
    *,
    planned_at: datetime,
    topic: str,
    event_type: str,
    notify_channel: str,
) -> list[asyncpg.Record]:
    """`invoices`: rows made by `plan_invoice_row`. One round trip."""
    return await conn.fetch(_PLAN, orjson.dumps(invoices).decode(), planned_at, topic, event_type, notify_channel)


_INSERT_TIMERS = """
INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at,
                    state, reason, cancelled_at, policy_version)
SELECT s, $1, $2, st, q, c, t, at, state, r, CASE WHEN state = 'cancelled' THEN now() END, $3
FROM unnest($4::text[], $5::text[], $6::int[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
            $11::text[]) AS u(s, st, q, c, t, at, state, r)
"""


async def insert_timers(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, policy_version: int, timers: list[PlannedTimer]
) -> None:
    if not timers:
        return
    await conn.execute(
        _INSERT_TIMERS,
        tenant_id,
        invoice_id,
        policy_version,
        [t.stage_id for t in timers],
        [t.stage for t in timers],
        [t.sequence for t in timers],
        [t.channel for t in timers],
        [t.template for t in timers],
        [t.scheduled_at for t in timers],
        [t.state for t in timers],
        [t.reason for t in timers],
    )


_INVOICE_OWNER = (
    "SELECT tenant_id, currency, planned_at, settled, last_payment_acknowledged_at, version, status"
    " FROM invoices WHERE invoice_id = $1"
)


async def invoice_owner(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_OWNER, invoice_id)


def stop_statement(change: str, reason: str, also: str = "") -> str:
    """Every stop (a settling payment or credit note, an amount correction that settles, a void, a
    write-off) is one statement of this shape: `change` updates the invoice's row (taking its row
    lock) and returns it with a `stop` column (and `newly`: this statement stopped it, so
    StagesCancelled is published even with nothing left to cancel); if stop, every timer still scheduled is cancelled
    with `reason` (a parameter) in the same statement, under the row locks the firing query's
    `FOR UPDATE SKIP LOCKED` respects, so the firing loop never fires a stage of an invoice whose
    stop has been applied (a paused timer is cancelled too). `$1` is the invoice id. One row per
    cancelled timer, in plan order (or one row with null timer columns; none: `change` changed
    nothing). `also`: more CTEs (", name AS (...)") the statement runs, e.g. a write of its own."""
    return f"""
WITH changed AS ({change}
), cancelled AS (
    UPDATE timers SET state = 'cancelled', cancelled_at = now(), reason = {reason}
    WHERE invoice_id = $1 AND state IN ('scheduled', 'paused') AND EXISTS (SELECT 1 FROM changed WHERE changed.stop)
    RETURNING stage_id, stage, sequence, channel, scheduled_at, cancelled_at
){also}
SELECT ch.*, c.stage_id, c.stage, c.sequence, c.channel, c.scheduled_at, c.cancelled_at
FROM changed AS ch LEFT JOIN cancelled AS c ON true
ORDER BY c.sequence, c.channel
"""


async def run_stop(
    conn: asyncpg.Connection, statement: str, *args
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Run a `stop_statement`: the changed invoice (None: nothing changed) and the timers cancelled."""
    rows = await conn.fetch(statement, *args)
    if not rows:
        return None, []
    return rows[0], [r for r in rows if r["stage_id"] is not None]


_TIMERS_OF = f"SELECT {TIMER_COLUMNS} FROM timers WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY sequence, channel"


async def timers_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_TIMERS_OF, tenant_id, invoice_id)


_INVOICE_OF = (
    "SELECT invoice_id, number, currency, amount_due, balance, due_date, settled, settled_at, planned_at,"
    " policy_id, policy_version, version, status, policy_key, segment_rule, segment_reason, customer, issue_date,"
    " issued_at, external_id, payment_url FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"
)


async def invoice_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_OF, tenant_id, invoice_id)
