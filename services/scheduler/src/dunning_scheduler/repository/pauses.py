"""SQL of pauses: the pauses themselves (holds, disputes, promises, payment plans), the timers they
pause and resume, the deadlines they wait for, and payment plans. Every function runs on the
caller's connection and transaction.

Locks: a customer-topic stop (a hold, a plan) takes its customer's advisory lock exclusively and
planning takes its invoices' customers' shared (`share_customers`) before it writes, so a customer
hold and an invoice planned meanwhile cannot both miss each other. Pausing and resuming lock the
invoice rows first, then their timers, in the order a settling payment takes them; the firing
query's `FOR UPDATE SKIP LOCKED` skips timers being paused, and a timer it fired just before is
seen `fired` and stays history."""

from datetime import datetime
from decimal import Decimal

import asyncpg
import orjson

# A live (not ended) pause that stops the invoice aliased `inv` (invoice_id, customer_id, tenant_id):
# on the invoice itself, or a hold on its customer. `{extra}` narrows the causes.
LIVE_PAUSE = """EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.invoice_id = {inv}.invoice_id{extra})
    OR EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.scope = 'customer'
               AND p.customer_id = {inv}.customer_id AND p.tenant_id = {inv}.tenant_id)"""

_LOCK_CUSTOMERS = (
    "SELECT count(pg_advisory_xact_lock{shared}(hashtext('scheduler.customer_pauses'), hashtext(c)))"
    " FROM (SELECT DISTINCT c FROM unnest($1::text[]) AS c WHERE c IS NOT NULL ORDER BY c) AS s"
)


async def lock_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    """A hold or plan on `customer_id` waits for planning of its invoices in flight, and the reverse."""
    await conn.execute(_LOCK_CUSTOMERS.format(shared=""), [customer_id])


async def share_customers(conn: asyncpg.Connection, customer_ids: list[str]) -> None:
    await conn.execute(_LOCK_CUSTOMERS.format(shared="_shared"), customer_ids)


_INSERT_PAUSES = """
INSERT INTO pauses (pause_id, cause, cause_id, scope, tenant_id, invoice_id, customer_id, since, ends_at, detail,
                    cause_event_id)
SELECT CASE WHEN i IS NULL THEN $2 ELSE $2 || '/' || i END, $1, $2,
       CASE WHEN i IS NULL THEN 'customer' ELSE 'invoice' END, $3, i, $5, $6, $7, $8::jsonb, $9
FROM unnest($4::text[]) AS i
ON CONFLICT (pause_id) DO NOTHING
RETURNING pause_id
"""


async def insert_pauses(
    conn: asyncpg.Connection,
    *,
    cause: str,
    cause_id: str,
    tenant_id: str,
    invoice_ids: list[str | None],
    customer_id: str | None,
    since: datetime,
    ends_at: datetime | None,
    detail: dict,
    cause_event_id: str,
) -> int:
    """One pause per invoice (None: the customer's, a customer hold); a pause known already is kept
    as it is (a redelivery, or a dispute whose credit arrived first). Returns how many are new."""
    rows = await conn.fetch(
        _INSERT_PAUSES,
        cause,
        cause_id,
        tenant_id,
        invoice_ids,
        customer_id,
        since,
        ends_at,
        detail,  # jsonb: the pool's codec writes it
        cause_event_id,
    )
    return len(rows)


# Lock the open, planned invoices a pause covers (by id, or all of a customer's), then pause their
# scheduled timers; a payment plan's own pause leaves its instalment reminders running.
# One row per timer paused, or one with null timer columns per invoice with none.
_PAUSE_TIMERS = """
WITH inv AS (
    SELECT invoice_id FROM invoices
    WHERE tenant_id = $1 AND (invoice_id = ANY($2::text[]) OR customer_id = $3)
      AND status = 'open' AND NOT settled AND planned_at IS NOT NULL
    ORDER BY invoice_id
    FOR UPDATE
), paused AS (
    UPDATE timers AS t SET state = 'paused'
    FROM inv WHERE t.invoice_id = inv.invoice_id AND t.state = 'scheduled' AND (NOT $4 OR t.kind <> 'instalment')
    RETURNING t.invoice_id, t.stage_id, t.stage, t.sequence, t.channel, t.scheduled_at
)
SELECT inv.invoice_id, p.stage_id, p.stage, p.sequence, p.channel, p.scheduled_at
FROM inv LEFT JOIN paused AS p USING (invoice_id)
ORDER BY inv.invoice_id, p.sequence, p.channel
"""


async def pause_timers(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    invoice_ids: list[str],
    customer_id: str | None,
    keep_instalments: bool,
) -> list[asyncpg.Record]:
    return await conn.fetch(_PAUSE_TIMERS, tenant_id, invoice_ids, customer_id, keep_instalments)


_END_PAUSES = """
UPDATE pauses SET state = 'ended', ended_at = now(), end_reason = $2
WHERE cause_id = $1 AND state <> 'ended' AND (cardinality($3::text[]) = 0 OR invoice_id = ANY($3::text[]))
RETURNING pause_id, cause, cause_id, scope, tenant_id, invoice_id, customer_id, since, detail, paid
"""


async def end_pauses(
    conn: asyncpg.Connection, cause_id: str, reason: str, invoice_ids: list[str] | None = None
) -> list[asyncpg.Record]:
    """End the live pauses of a cause (only those of `invoice_ids`, if given); the rows ended."""
    return await conn.fetch(_END_PAUSES, cause_id, reason, invoice_ids or [])


_END_INVOICE_PAUSES = """
UPDATE pauses SET state = 'ended', ended_at = now(), end_reason = $2
WHERE invoice_id = $1 AND state <> 'ended'
RETURNING pause_id, cause, cause_id, scope, tenant_id, invoice_id, customer_id, since, detail, paid
"""


async def end_invoice_pauses(conn: asyncpg.Connection, invoice_id: str, reason: str) -> list[asyncpg.Record]:
    """A terminal stop ends every pause on the invoice itself (a customer hold stays: it covers others)."""
    return await conn.fetch(_END_INVOICE_PAUSES, invoice_id, reason)


async def pause_of(conn: asyncpg.Connection, pause_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM pauses WHERE pause_id = $1 FOR UPDATE", pause_id)


async def live_pauses(conn: asyncpg.Connection, cause_id: str) -> list[asyncpg.Record]:
    """A cause's pauses not ended (locked), by pause id."""
    return await conn.fetch(
        "SELECT * FROM pauses WHERE cause_id = $1 AND state <> 'ended' ORDER BY pause_id FOR UPDATE", cause_id
    )


async def set_pause(conn: asyncpg.Connection, pause_id: str, *, state: str, detail: dict) -> None:
    await conn.execute(
        "UPDATE pauses SET state = $2, detail = detail || $3::jsonb WHERE pause_id = $1",
        pause_id,
        state,
        detail,
    )


# One live pause covering an invoice (its own first, then its customer's hold).
_COVERING = """
SELECT p.cause, p.cause_id, p.cause_event_id FROM invoices AS i JOIN pauses AS p
    ON p.invoice_id = i.invoice_id
       OR (p.scope = 'customer' AND p.customer_id = i.customer_id AND p.tenant_id = i.tenant_id)
WHERE i.invoice_id = $1 AND p.state <> 'ended'
ORDER BY p.scope DESC, p.since, p.pause_id
LIMIT 1
"""


async def covering_pause(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_COVERING, invoice_id)


_HELD = f"""SELECT ({LIVE_PAUSE.format(inv="i", extra=" AND p.cause <> 'payment_plan'")})
FROM invoices AS i WHERE i.invoice_id = $1"""


async def held(conn: asyncpg.Connection, invoice_id: str) -> bool:
    """Whether a pause other than a payment plan's stops the invoice now (unknown invoice: False)."""
    return bool(await conn.fetchval(_HELD, invoice_id))


_TIMEZONE_OF = """
SELECT coalesce((SELECT customer->>'timezone' FROM invoices WHERE invoice_id = $1),
                (SELECT timezone FROM customers WHERE customer_id = $2))
"""


async def timezone_of(conn: asyncpg.Connection, invoice_id: str, customer_id: str) -> str | None:
    """The customer's time zone as the invoice's snapshot has it, else as its latest CustomerUpdated."""
    return await conn.fetchval(_TIMEZONE_OF, invoice_id, customer_id)


_CUSTOMER_INVOICES = (
    "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND customer_id = $2"
    " AND status = 'open' AND NOT settled ORDER BY invoice_id"
)


async def open_invoices_of(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> list[str]:
    return [r["invoice_id"] for r in await conn.fetch(_CUSTOMER_INVOICES, tenant_id, customer_id)]


# What resuming needs of each invoice, its row locked: whether a pause still stops it (any but a
# plan's: `held`; a plan's: `planned`), its time zone and the policy it was planned with.
_LOCK_FOR_RESUME = f"""
SELECT i.invoice_id, i.tenant_id, i.customer_id, i.customer->>'timezone' AS timezone, i.policy_version,
       i.policy_is_default,
       ({LIVE_PAUSE.format(inv="i", extra=" AND p.cause <> 'payment_plan'")}) AS held,
       EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.invoice_id = i.invoice_id
               AND p.cause = 'payment_plan') AS in_plan
FROM invoices AS i
WHERE i.invoice_id = ANY($1::text[]) AND i.status = 'open' AND NOT i.settled AND i.planned_at IS NOT NULL
ORDER BY i.invoice_id
FOR UPDATE OF i
"""


async def lock_for_resume(conn: asyncpg.Connection, invoice_ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(_LOCK_FOR_RESUME, invoice_ids)


_PAUSED_TIMERS = (
    "SELECT stage_id, invoice_id, stage, sequence, channel, template, scheduled_at, state, kind, context"
    " FROM timers WHERE invoice_id = ANY($1::text[]) ORDER BY invoice_id, sequence, channel FOR UPDATE"
)


async def lock_invoice_timers(conn: asyncpg.Connection, invoice_ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(_PAUSED_TIMERS, invoice_ids)


# The resumed timers (stage_id, state, scheduled_at, reason), one JSON array; a paused timer only.
_WRITE_RESUMED = """
UPDATE timers AS t SET state = x->>1, scheduled_at = coalesce((x->>2)::timestamptz, t.scheduled_at), reason = x->>3
FROM jsonb_array_elements($1::text::jsonb) AS x
WHERE t.stage_id = x->>0 AND t.state = 'paused'
"""


async def write_resumed(conn: asyncpg.Connection, rows: list[list]) -> None:
    if rows:
        await conn.execute(_WRITE_RESUMED, orjson.dumps(rows).decode())


# Timers that are no policy's stage (promise_broken, instalment reminders): their context quoted.
_INSERT_EXTRA = """
INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                    policy_version, kind, context, gate_partition, gate_offset)
SELECT x->>0, x->>1, x->>2, x->>3, (x->>4)::int, x->>5, x->>6, (x->>7)::timestamptz, x->>8, (x->>9)::int, x->>10,
       x->11, g.gate_partition, g.gate_offset
FROM jsonb_array_elements($1::text::jsonb) AS x
LEFT JOIN LATERAL (SELECT gate_partition, gate_offset FROM timers AS o WHERE o.invoice_id = x->>2 LIMIT 1) AS g ON true
ON CONFLICT (invoice_id, stage, channel) DO NOTHING
"""
EXTRA_FIELDS = (
    "stage_id",
    "tenant_id",
    "invoice_id",
    "stage",
    "sequence",
    "channel",
    "template",
    "scheduled_at",
    "state",
    "policy_version",
    "kind",
    "context",
)


async def insert_extra_timers(conn: asyncpg.Connection, rows: list[list]) -> None:
    """`rows` in EXTRA_FIELDS order."""
    if rows:
        await conn.execute(_INSERT_EXTRA, orjson.dumps(rows).decode())


async def stage_count(conn: asyncpg.Connection, invoice_id: str, prefix: str) -> int:
    return await conn.fetchval(
        "SELECT count(DISTINCT stage) FROM timers WHERE invoice_id = $1 AND stage LIKE $2 || '%'", invoice_id, prefix
    )


# A promise's money: the payments and credits applied to its invoice (money_applied) that were
# acknowledged at or after it was made and by its deadline, counted afresh whenever asked: a payment
# applied before the scheduler applied PromiseMade counts as much as one applied after (the two
# topics are consumed independently), and none counts twice. The invoice's active promises.
_COUNT_PAID = """
UPDATE pauses AS p SET paid = (
    SELECT coalesce(sum(m.amount), 0) FROM money_applied AS m
    WHERE m.invoice_id = p.invoice_id AND m.acknowledged_at >= p.since
      AND m.acknowledged_at <= (p.detail->>'deadline')::timestamptz)
WHERE p.invoice_id = $1 AND p.cause = 'promise' AND p.state = 'active'
RETURNING pause_id, cause_id, tenant_id, invoice_id, since, detail, paid
"""


async def count_promise_paid(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_COUNT_PAID, invoice_id)


# -- deadlines --------------------------------------------------------------------------------

_ADD_DEADLINES = """
INSERT INTO deadlines (kind, cause_id, number, tenant_id, at, gated)
SELECT x->>0, x->>1, (x->>2)::int, x->>3, (x->>4)::timestamptz, (x->>5)::boolean
FROM jsonb_array_elements($1::text::jsonb) AS x
ON CONFLICT DO NOTHING
"""


async def add_deadlines(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    """(kind, cause_id, number, tenant_id, at, gated) each."""
    if rows:
        await conn.execute(_ADD_DEADLINES, orjson.dumps([list(r) for r in rows]).decode())


async def drop_deadlines(conn: asyncpg.Connection, cause_id: str) -> None:
    await conn.execute("DELETE FROM deadlines WHERE cause_id = $1", cause_id)


# Due deadlines in time order: an ungated one at `now`, a gated one once the gate's watermark is at
# or past it. Taken (deleted) by this transaction; SKIP LOCKED lets replicas share them.
_TAKE_DUE = """
DELETE FROM deadlines WHERE (kind, cause_id, number) IN (
    SELECT kind, cause_id, number FROM deadlines
    WHERE at <= now() AND (NOT gated OR at <= $1)
    ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING kind, cause_id, number, tenant_id, at
"""


async def take_due_deadlines(conn: asyncpg.Connection, watermark: datetime | None, limit: int) -> list[asyncpg.Record]:
    rows = await conn.fetch(_TAKE_DUE, watermark, limit)
    return sorted(rows, key=lambda r: (r["at"], r["kind"], r["cause_id"], r["number"]))


# -- payment plans ----------------------------------------------------------------------------

_INSERT_PLAN = """
INSERT INTO payment_plans (plan_id, tenant_id, customer_id, currency, total, invoices, instalments,
                           first_invoice_id, acknowledged_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)
ON CONFLICT (plan_id) DO NOTHING
RETURNING plan_id
"""


async def insert_plan(
    conn: asyncpg.Connection,
    *,
    plan_id: str,
    tenant_id: str,
    customer_id: str,
    currency: str,
    total: Decimal,
    invoices: list[dict],
    instalments: list[dict],
    acknowledged_at: datetime,
) -> bool:
    return (
        await conn.fetchval(
            _INSERT_PLAN,
            plan_id,
            tenant_id,
            customer_id,
            currency,
            total,
            invoices,
            instalments,
            invoices[0]["invoice_id"],
            acknowledged_at,
        )
        is not None
    )


# A plan locked, with its invoices' balances now (an invoice the scheduler does not know yet: its
# balance as agreed).
_LOCK_PLAN = """
SELECT pl.*, (SELECT coalesce(jsonb_agg(coalesce(i.balance, (x->>'balance')::numeric)
                                       ORDER BY ord), '[]'::jsonb)
              FROM jsonb_array_elements(pl.invoices) WITH ORDINALITY AS e(x, ord)
              LEFT JOIN invoices AS i ON i.invoice_id = x->>'invoice_id') AS balances_now,
       (SELECT i.customer->>'timezone' FROM invoices AS i WHERE i.invoice_id = pl.first_invoice_id) AS timezone
FROM payment_plans AS pl WHERE pl.plan_id = $1
FOR UPDATE OF pl
"""


async def lock_plan(conn: asyncpg.Connection, plan_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK_PLAN, plan_id)


_ACTIVE_PLANS_OF = (
    "SELECT plan_id FROM payment_plans WHERE status = 'active'"
    " AND invoices @> jsonb_build_array(jsonb_build_object('invoice_id', $1::text)) ORDER BY plan_id"
)


async def active_plans_of(conn: asyncpg.Connection, invoice_id: str) -> list[str]:
    return [r["plan_id"] for r in await conn.fetch(_ACTIVE_PLANS_OF, invoice_id)]


async def finish_plan(conn: asyncpg.Connection, plan_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE payment_plans SET status = $2, finished_at = now() WHERE plan_id = $1 AND status = 'active'",
        plan_id,
        status,
    )


# A plan's instalment reminders still to come (scheduled or paused), those of `numbers` (empty:
# all), cancelled with `reason`.
_CANCEL_INSTALMENTS = """
UPDATE timers SET state = 'cancelled', cancelled_at = now(), reason = $4
WHERE invoice_id = $1 AND kind = 'instalment' AND state IN ('scheduled', 'paused') AND context->>'plan_id' = $2
  AND (cardinality($3::int[]) = 0 OR (context->>'number')::int = ANY($3::int[]))
RETURNING stage_id, stage, sequence, channel, scheduled_at
"""


async def cancel_instalments(
    conn: asyncpg.Connection, invoice_id: str, plan_id: str, numbers: list[int], reason: str
) -> list[asyncpg.Record]:
    return await conn.fetch(_CANCEL_INSTALMENTS, invoice_id, plan_id, numbers, reason)
