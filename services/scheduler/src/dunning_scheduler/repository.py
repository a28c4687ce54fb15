"""SQL for invoices and timers. Every function runs on the caller's connection and transaction."""

from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson

from dunning import outbox
from dunning.contracts import PaymentReceived, topic
from dunning_scheduler.planning import SETTLED as SETTLED_REASON
from dunning_scheduler.planning import PlannedTimer

TIMER_COLUMNS = (
    "stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,"
    " fired_at, cancelled_at, reason, policy_version"
)


# Planning, one statement for any number of InvoiceIssued (distinct invoice ids): check that each
# tenant's policy is still the version planned with, store the snapshots (an invoice planned before,
# or another tenant's, is left alone), insert the timers and the DunningPlanned outbox rows of the
# invoices stored, and wake the outbox relay (and the firing loop if a timer is due now). An invoice
# a payment settled first gets its snapshot only: its plan (all cancelled) is the caller's next step.
# The rows travel as one JSON array of arrays (see PLAN_INVOICE_FIELDS, PLAN_TIMER_FIELDS): for
# thousands of values that is several times cheaper, on both sides, than one array parameter per
# column. The outbox payload travels as a JSON string and is stored byte for byte.
# One row per input: n, policy_current, settled (null: not stored).
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
           (x->>23)::int AS gate_partition, (x->>24)::bigint AS gate_offset
    FROM jsonb_array_elements($1::text::jsonb) AS x
), current_policy AS (
    SELECT u.n FROM u LEFT JOIN LATERAL (
        SELECT p.version, p.created_at FROM policies AS p WHERE p.tenant_id = u.tenant_id
        ORDER BY p.version DESC LIMIT 1) AS p ON true
    WHERE coalesce(p.version, 0) = u.stored_version AND p.created_at IS NOT DISTINCT FROM u.stored_at
), inv AS (
    INSERT INTO invoices AS i (invoice_id, tenant_id, external_id, number, currency, amount_due, balance,
                               issue_date, due_date, payment_url, customer, issued_at, issued_event_id,
                               policy_id, policy_version, planned_at)
    SELECT u.invoice_id, u.tenant_id, u.external_id, u.number, u.currency, u.amount_due, u.amount_due,
           u.issue_date, u.due_date, u.payment_url, u.customer, u.issued_at, u.issued_event_id, u.policy_id,
           u.policy_version, $2
    FROM u JOIN current_policy USING (n)
    ORDER BY u.n
    ON CONFLICT (invoice_id) DO UPDATE SET
        external_id = EXCLUDED.external_id, number = EXCLUDED.number, currency = EXCLUDED.currency,
        amount_due = EXCLUDED.amount_due,
        balance = CASE WHEN i.last_payment_acknowledged_at IS NULL THEN EXCLUDED.balance ELSE i.balance END,
        issue_date = EXCLUDED.issue_date, due_date = EXCLUDED.due_date, payment_url = EXCLUDED.payment_url,
        customer = EXCLUDED.customer, issued_at = EXCLUDED.issued_at, issued_event_id = EXCLUDED.issued_event_id,
        policy_id = EXCLUDED.policy_id, policy_version = EXCLUDED.policy_version,
        planned_at = EXCLUDED.planned_at, updated_at = now()
    WHERE i.planned_at IS NULL AND i.tenant_id = EXCLUDED.tenant_id
    RETURNING i.invoice_id, i.settled
), planned AS (
    SELECT u.*, inv.settled FROM u JOIN inv USING (invoice_id)
), tim AS (
    INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                        reason, policy_version, gate_partition, gate_offset)
    SELECT t->>0, p.tenant_id, p.invoice_id, t->>1, (t->>2)::int, t->>3, t->>4, (t->>5)::timestamptz, t->>6,
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
SELECT u.n, cp.n IS NOT NULL AS policy_current, p.settled, (SELECT count(*) FROM wake) AS woken
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
    "SELECT tenant_id, currency, planned_at, settled, last_payment_acknowledged_at FROM invoices WHERE invoice_id = $1"
)


async def invoice_owner(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_OWNER, invoice_id)


_APPLY_PAYMENT = """
WITH paid AS (
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
), cancelled AS (
    UPDATE timers SET state = 'cancelled', cancelled_at = now(), reason = $8
    WHERE invoice_id = $1 AND state = 'scheduled' AND EXISTS (SELECT 1 FROM paid WHERE paid.settled)
    RETURNING stage_id, stage, sequence, channel, scheduled_at, cancelled_at
)
SELECT p.settled, p.balance, p.planned_at, c.stage_id, c.stage, c.sequence, c.channel, c.scheduled_at,
       c.cancelled_at
FROM paid AS p LEFT JOIN cancelled AS c ON true
ORDER BY c.sequence, c.channel
"""


async def apply_payment(
    conn: asyncpg.Connection,
    *,
    invoice_id: str,
    tenant_id: str,
    currency: str,
    balance: Decimal,
    settled: bool,
    payment_id: str,
    acknowledged_at: datetime,
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """Apply a payment unless a later one (by acknowledged_at) was applied already; a settled
    invoice stays settled. Once settled, every still-scheduled timer is cancelled (fired ones are
    history and stay), in the same statement. Returns the invoice (settled, balance, planned_at;
    None: not applied, as stale, or another tenant's / currency's invoice) and the timers cancelled
    now, in plan order."""
    rows = await conn.fetch(
        _APPLY_PAYMENT,
        invoice_id,
        tenant_id,
        currency,
        balance,
        settled,
        payment_id,
        acknowledged_at,
        SETTLED_REASON,
    )
    if not rows:
        return None, []
    return rows[0], [r for r in rows if r["stage_id"] is not None]


# The firing query, in one place. A timer fires only if it is due, its time is at or before the best
# watermark among the statements whose payments offsets this scheduler has applied, and its
# InvoiceIssued is below reconciliation's certified position; no usable statement, nothing fires.
# SKIP LOCKED lets replicas fire side by side, each timer once; $2 false turns the gate off (no
# reconciliation). $1 is the payments topic in both statements that start with the gate. Why this
# keeps the cancel guarantee: docs/cancel-guarantee.md#the-firing-gate.
_GATE = """
WITH applied AS (
    SELECT partition::text AS partition, next_offset FROM consumer_positions WHERE topic = $1
), usable AS (
    SELECT s.watermark, s.invoice_positions FROM payment_watermarks AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM jsonb_each_text(s.payments_offsets) AS o(partition, end_offset)
        LEFT JOIN applied AS a USING (partition)
        WHERE coalesce(a.next_offset, 0) < o.end_offset::bigint)
), gate AS (
    SELECT (SELECT max(watermark) FROM usable) AS watermark,
           (SELECT coalesce(jsonb_object_agg(partition, position), '{}'::jsonb) FROM (
                SELECT p.key AS partition, max(p.value::bigint) AS position
                FROM usable CROSS JOIN LATERAL jsonb_each_text(usable.invoice_positions) AS p
                GROUP BY p.key) AS best) AS positions
)
"""
_FIRE_DUE = (
    _GATE
    + """
UPDATE timers AS t SET state = 'fired', fired_at = now()
FROM invoices AS i
WHERE t.stage_id = ANY(ARRAY(
        SELECT d.stage_id FROM timers AS d, gate
        WHERE d.state = 'scheduled' AND d.scheduled_at <= now()
          AND (NOT $2 OR (d.scheduled_at <= gate.watermark
                          AND (d.gate_offset IS NULL
                               OR d.gate_offset < (gate.positions ->> d.gate_partition::text)::bigint)))
        ORDER BY d.scheduled_at
        LIMIT $3
        FOR UPDATE OF d SKIP LOCKED))
  AND i.invoice_id = t.invoice_id
RETURNING t.stage_id, t.tenant_id, t.invoice_id, t.stage, t.sequence, t.channel, t.template, t.scheduled_at,
          t.fired_at, i.external_id, i.number, i.currency, i.amount_due, i.balance, i.issue_date, i.due_date,
          i.payment_url, i.customer
"""
)
_GATE_STATE = _GATE + "SELECT watermark, positions FROM gate"
PAYMENTS_TOPIC = topic(PaymentReceived)  # the catalogue's (Settings.payments_topic may name another)


async def fire_due(
    conn: asyncpg.Connection, limit: int, *, gated: bool = True, payments_topic: str = PAYMENTS_TOPIC
) -> list[asyncpg.Record]:
    """Claim up to `limit` due timers the gate lets through and mark them fired (inside the caller's
    transaction)."""
    return await conn.fetch(_FIRE_DUE, payments_topic, gated, limit)


async def gate_state(conn: asyncpg.Connection, payments_topic: str = PAYMENTS_TOPIC) -> asyncpg.Record:
    """The gate as the firing query sees it now: watermark (None: no usable statement) and positions."""
    return await conn.fetchrow(_GATE_STATE, payments_topic)


_WAKE_FIRING = "SELECT pg_notify($1 || '_' || current_schema(), '')"


async def wake_firing(conn: asyncpg.Connection, channel: str) -> None:
    """NOTIFY <channel>_<schema> at commit: the firing loop LISTENs there (see planner.TIMERS_CHANNEL)."""
    await conn.execute(_WAKE_FIRING, channel)


_STORE_WATERMARKS = (
    "INSERT INTO payment_watermarks (statement_id, watermark, payments_offsets, invoice_positions, computed_at)"
    " SELECT (s->>0)::uuid, (s->>1)::timestamptz, s->2, s->3, (s->>4)::timestamptz"
    " FROM jsonb_array_elements($1::text::jsonb) AS s ON CONFLICT (statement_id) DO NOTHING"
)


async def store_watermarks(conn: asyncpg.Connection, statements: list[tuple[str, dict]]) -> None:
    """Keep the statements (id, data); a redelivered one is already there."""
    await conn.execute(
        _STORE_WATERMARKS,
        orjson.dumps(
            [
                [sid, d["watermark"], d["payments_offsets"], d["invoice_positions"], d["computed_at"]]
                for sid, d in statements
            ]
        ).decode(),
    )


_PRUNE_WATERMARKS = (
    "DELETE FROM payment_watermarks WHERE statement_id IN ("
    " SELECT statement_id FROM payment_watermarks ORDER BY received_at DESC OFFSET 20)"
    " AND received_at < now() - make_interval(secs => $1)"
)


async def prune_watermarks(conn: asyncpg.Connection, keep_seconds: float = 300.0) -> int:
    """Forget statements received more than keep_seconds ago, keeping the newest 20 whatever their
    age. A statement is only ever superseded by newer ones; a scheduler whose payments consumer lags
    by more than keep_seconds waits for a newer statement it has caught up with (the safe side)."""
    result = await conn.execute(_PRUNE_WATERMARKS, keep_seconds)
    return int(result.split()[-1])


_NEXT_DUE_AT = "SELECT min(scheduled_at) FROM timers WHERE state = 'scheduled'"


async def next_due_at(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval(_NEXT_DUE_AT)


_FIRING_GAUGES = (
    "SELECT (SELECT count(*) FROM timers WHERE state = 'scheduled' AND scheduled_at <= now()) AS due,"
    " (SELECT extract(epoch FROM now() - min(scheduled_at))::float8 FROM timers"
    "   WHERE state = 'scheduled' AND scheduled_at <= now()) AS oldest_due_age,"
    " (SELECT extract(epoch FROM now() - max(watermark))::float8 FROM payment_watermarks) AS watermark_age"
)


async def firing_gauges(conn: asyncpg.Connection) -> asyncpg.Record:
    """For /metrics: timers due and not fired, how long the oldest has been due, and the age of the
    newest payments watermark (None: none received). Both read the partial index timers_due."""
    return await conn.fetchrow(_FIRING_GAUGES)


_TIMERS_OF = f"SELECT {TIMER_COLUMNS} FROM timers WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY sequence, channel"


async def timers_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_TIMERS_OF, tenant_id, invoice_id)


_INVOICE_OF = (
    "SELECT invoice_id, number, currency, amount_due, balance, due_date, settled, settled_at, planned_at,"
    " policy_id, policy_version FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"
)


async def invoice_of(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_OF, tenant_id, invoice_id)


# --- policies: every change is a new version; the latest version is the active one ---------------

_LATEST_POLICY = "SELECT version, document, created_at FROM policies WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1"
_LOCK_TENANT_POLICY = "SELECT pg_advisory_xact_lock(hashtext('scheduler.policy:' || $1))"
_INSERT_POLICY = "INSERT INTO policies (tenant_id, version, document) VALUES ($1, $2, $3) RETURNING created_at"


async def latest_policy(conn: asyncpg.Connection, tenant_id: str) -> asyncpg.Record | None:
    """The tenant's latest stored version (version, document, created_at); None: none stored."""
    return await conn.fetchrow(_LATEST_POLICY, tenant_id)


async def lock_tenant_policy(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Serialise the tenant's policy writers until the transaction ends."""
    await conn.execute(_LOCK_TENANT_POLICY, tenant_id)


async def insert_policy(conn: asyncpg.Connection, tenant_id: str, version: int, document: dict) -> datetime:
    return await conn.fetchval(_INSERT_POLICY, tenant_id, version, document)
