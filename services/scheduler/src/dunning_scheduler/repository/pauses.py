"""SQL of pauses: the pauses themselves (holds, disputes, promises, payment plans) and the timers
they pause and resume (the deadlines they wait for: `repository.deadlines`; payment plans:
`repository.plans`). Every function runs on the caller's connection and transaction.

Locks: a customer-topic stop (a hold, a plan) takes its customer's advisory lock exclusively and
planning takes its invoices' customers' shared (`share_customers`) before it writes, so a customer
hold and an invoice planned meanwhile cannot both miss each other. Pausing and resuming lock the
invoice rows first, then their timers, in the order a settling payment takes them; the firing
query's `FOR UPDATE SKIP LOCKED` skips timers being paused, and a timer it fired just before is
seen `fired` and stays history."""

from datetime import datetime

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


async def lock_customers(conn: asyncpg.Connection, customer_ids: list[str]) -> None:
    """`lock_customer` for several, in one order (no deadlock between two takers)."""
    if customer_ids:
        await conn.execute(_LOCK_CUSTOMERS.format(shared=""), customer_ids)


_LOCK_INVOICES = (
    "SELECT count(pg_advisory_xact_lock(hashtext('scheduler.invoice_pauses'), hashtext(i)))"
    " FROM (SELECT DISTINCT i FROM unnest($1::text[]) AS i WHERE i IS NOT NULL ORDER BY i) AS s"
)


async def lock_invoices(conn: asyncpg.Connection, invoice_ids: list[str]) -> None:
    """A pause placed or ended on these invoices and their planning take turns: planning reads the
    live pauses and writes the timers paused or not, placing or ending a pause reads the invoice and
    its timers; without the turn, a pause ended (a hold expiring) while the invoice is planned in
    another transaction leaves its timers paused for good. Taken after the customers' locks."""
    if invoice_ids:
        await conn.execute(_LOCK_INVOICES, invoice_ids)


async def share_customers(conn: asyncpg.Connection, customer_ids: list[str]) -> None:
    await conn.execute(_LOCK_CUSTOMERS.format(shared="_shared"), customer_ids)


_INSERT_PAUSES = """
INSERT INTO pauses (pause_id, cause, cause_id, scope, tenant_id, invoice_id, customer_id, since, ends_at, detail,
                    cause_event_id)
SELECT CASE WHEN i IS NULL THEN $2 ELSE $2 || '/' || i END
           || CASE WHEN $1 = 'chargeback' THEN '/chargeback' ELSE '' END,
       $1, $2,
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
    as it is (a redelivery, or a dispute whose credit arrived first). Returns how many are new.
    A chargeback's pause id has its own suffix: its cause id is the payment's, as the processing
    pause of the same payment (a debit, then disputed) is."""
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
  AND ($4::text IS NULL OR cause = $4)
RETURNING pause_id, cause, cause_id, scope, tenant_id, invoice_id, customer_id, since, detail, paid
"""


async def end_pauses(
    conn: asyncpg.Connection,
    cause_id: str,
    reason: str,
    invoice_ids: list[str] | None = None,
    cause: str | None = None,
) -> list[asyncpg.Record]:
    """End the live pauses of a cause id (only those of `invoice_ids` and of `cause`, if given); the
    rows ended."""
    return await conn.fetch(_END_PAUSES, cause_id, reason, invoice_ids or [], cause)


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
       i.policy_is_default, i.policy_key,
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


_INVOICE_FOR_PAUSE = (
    "SELECT invoice_id, tenant_id, customer_id, customer->>'timezone' AS timezone, policy_version,"
    " policy_is_default, policy_key FROM invoices WHERE invoice_id = $1"
)


async def invoice_for_pause(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    """What a pause needs of an invoice: tenant, time zone, the policy it was planned with."""
    return await conn.fetchrow(_INVOICE_FOR_PAUSE, invoice_id)
