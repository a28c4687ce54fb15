"""SQL of invoice-ingest: customers, invoices, payments, the dunning timeline, Idempotency-Keys. Set-based
where it counts.

Every query is scoped by tenant. Bulk writes go through `unnest` arrays in one statement each,
sorted by external id so concurrent imports lock rows in the same order (no deadlocks).
"""

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import orjson

from dunning import outbox
from dunning.contracts import PaymentReceived

INVOICE_SELECT = """
SELECT i.id, i.external_id, i.number, i.status, i.currency, i.amount_due, i.balance, i.issue_date,
       i.due_date, i.payment_url, i.metadata, i.created_at, i.customer_id,
       c.external_id AS customer_external_id, c.name AS customer_name, c.email AS customer_email,
       c.locale AS customer_locale, c.timezone AS customer_timezone
FROM invoices i JOIN customers c ON c.id = i.customer_id
"""

_CREATE_ONE = f"""
WITH existing AS (
    SELECT id, content_hash FROM invoices WHERE tenant_id = $1 AND external_id = $2
), customer AS (
    INSERT INTO customers AS c (id, tenant_id, external_id, name, email, locale, timezone)
    SELECT $3, $1, $4, $5, $6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (tenant_id, external_id) DO UPDATE
       SET name = EXCLUDED.name, email = EXCLUDED.email, locale = EXCLUDED.locale,
           timezone = EXCLUDED.timezone, updated_at = now()
    RETURNING c.id
), created AS (
    INSERT INTO invoices (id, tenant_id, external_id, number, customer_id, currency, amount_due, balance,
                          issue_date, due_date, payment_url, metadata, content_hash, created_at)
    SELECT $9, $1, $2, $10, customer.id, $11, $12, $12, $13, $14, $15, $16, $17, $18 FROM customer
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING id, customer_id
), queued AS (
    {outbox.INSERT}
    SELECT $19, $20, created.id, $21, $22, $23, $24::bytea || convert_to(created.customer_id, 'UTF8') || $25::bytea
      FROM created
    RETURNING 1
)
SELECT (SELECT id FROM created) AS created_id, (SELECT customer_id FROM created) AS customer_id,
       (SELECT id FROM existing) AS existing_id, (SELECT content_hash FROM existing) AS existing_hash,
       (SELECT {outbox.WAKE_RELAYS} FROM queued) AS notified
"""


async def create_one(conn: asyncpg.Connection, tenant_id: str, *, invoice_id: str, new_customer_id: str,
                     inv: Any, content_hash: bytes, created_at: datetime, event: Any, topic: str,
                     event_type: str) -> asyncpg.Record:
    """One statement, atomic without BEGIN/COMMIT: upsert the customer, insert the invoice unless
    (tenant, external_id) exists, and if it was inserted, its event in the outbox (the payload gets
    the customer's id spliced in, see messages.OutboxRow) and a NOTIFY that wakes the relays."""
    cust = inv.customer
    return await conn.fetchrow(
        _CREATE_ONE, tenant_id, inv.external_id, new_customer_id, cust.external_id, cust.name, cust.email,
        cust.locale, cust.timezone, invoice_id, inv.number, inv.currency, inv.amount_due, inv.issue_date,
        inv.due_date, inv.payment_url, inv.metadata, content_hash, created_at,
        event.lane, topic, event.event_id, event_type, event.headers, event.head, event.tail,
    )


_EXISTING_BY_EXTERNAL_ID = (
    "SELECT i.external_id, i.id, i.content_hash FROM json_array_elements_text($2::json) AS e(external_id)"
    " CROSS JOIN LATERAL (SELECT external_id, id, content_hash FROM invoices"
    "                      WHERE tenant_id = $1 AND external_id = e.external_id LIMIT 1) AS i"
)


async def existing_by_external_id(conn: asyncpg.Connection, tenant_id: str,
                                  external_ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
    # One unique-index probe per id (LATERAL ... LIMIT 1), whatever the planner's statistics say: right
    # after an import they are stale and would have it scan all of the tenant's invoices instead.
    rows = await conn.fetch(_EXISTING_BY_EXTERNAL_ID, tenant_id, list(external_ids))
    return {r["external_id"]: (r["id"], bytes(r["content_hash"])) for r in rows}


_UPSERT_CUSTOMERS = """
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
        AS u(id, external_id, name, email, locale, timezone)
), written AS (
    INSERT INTO customers AS c (id, tenant_id, external_id, name, email, locale, timezone)
    SELECT id, $1, external_id, name, email, locale, timezone FROM input
    ON CONFLICT (tenant_id, external_id) DO UPDATE
       SET name = EXCLUDED.name, email = EXCLUDED.email, locale = EXCLUDED.locale,
           timezone = EXCLUDED.timezone, updated_at = now()
     WHERE (c.name, c.email, c.locale, c.timezone)
           IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.email, EXCLUDED.locale, EXCLUDED.timezone)
    RETURNING c.external_id, c.id
)
SELECT external_id, id FROM written
UNION ALL
SELECT c.external_id, c.id
  FROM input i CROSS JOIN LATERAL (SELECT external_id, id FROM customers
                                    WHERE tenant_id = $1 AND external_id = i.external_id LIMIT 1) AS c
 WHERE i.external_id NOT IN (SELECT external_id FROM written)
"""
_CUSTOMER_IDS = "SELECT external_id, id FROM customers WHERE tenant_id = $1 AND external_id = ANY($2::text[])"


class CustomerRow(NamedTuple):
    """A customer to write: a row of `upsert_customers` (`id` is used if the customer is new)."""

    id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str


async def upsert_customers(conn: asyncpg.Connection, tenant_id: str, rows: Sequence[CustomerRow]) -> dict[str, str]:
    """Returns external_id -> customer id.

    New customers are inserted, changed ones updated; unchanged ones are left alone (a nightly sync
    re-sends the same customers: rewriting them would only make dead rows).
    """
    if not rows:
        return {}
    cols = list(zip(*sorted(rows, key=lambda r: r.external_id), strict=True))
    result = await conn.fetch(_UPSERT_CUSTOMERS, tenant_id, *[list(c) for c in cols])
    ids = {r["external_id"]: r["id"] for r in result}
    if len(ids) < len(rows):  # inserted, unchanged, by a transaction that committed after our snapshot
        missing = [r.external_id for r in rows if r.external_id not in ids]
        found = await conn.fetch(_CUSTOMER_IDS, tenant_id, missing)
        ids.update({r["external_id"]: r["id"] for r in found})
    return ids


# Bulk rows travel as one JSON document per statement (json_to_recordset): one orjson.dumps in the
# pool's json codec, where unnest arrays cost asyncpg ~4 us a row of per-element encoding.
_INSERT_INVOICES = """
WITH ins AS (
    INSERT INTO invoices (id, tenant_id, external_id, number, customer_id, currency, amount_due, balance,
                          issue_date, due_date, payment_url, metadata, content_hash, created_at)
    SELECT u.id, $1, u.external_id, u.number, u.customer_id, u.currency, u.amount_due, u.amount_due,
           u.issue_date, u.due_date, u.payment_url, u.metadata, decode(u.content_hash, 'hex'), $2
    FROM json_to_recordset($3::json) AS u(id text, external_id text, number text, customer_id text, currency text,
                                          amount_due numeric, issue_date date, due_date date, payment_url text,
                                          metadata jsonb, content_hash text)
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""


_INVOICES_STORED = "SELECT id FROM invoices WHERE id = ANY($1::text[])"


async def insert_invoices(conn: asyncpg.Connection, tenant_id: str, created_at: datetime,
                          rows: list[dict[str, Any]]) -> set[str] | None:
    """rows: {id, external_id, number, customer_id, currency, amount_due (canonical text), issue_date,
    due_date, payment_url, metadata, content_hash (hex)}, sorted by external_id. Returns None if every
    row was inserted, else the ids that were (the others lost a race with a concurrent import)."""
    if not rows:
        return set()
    inserted = await conn.fetchval(_INSERT_INVOICES, tenant_id, created_at, rows)
    if inserted == len(rows):
        return None
    found = await conn.fetch(_INVOICES_STORED, [r["id"] for r in rows])
    return {r["id"] for r in found}


_ADD_TO_OUTBOX = outbox.insert_and_wake(
    "SELECT l, $1, k, i, $2, h::jsonb, p FROM unnest($3::smallint[], $4::text[], $5::uuid[], $6::text[],"
    " $7::bytea[]) AS u(l, k, i, h, p)")


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event_type: str, columns: Sequence[list]) -> None:
    """columns: lane, key, event_id, headers (JSON text), payload (bytes) of one event type and topic:
    what dunning.outbox.add_many writes, and the NOTIFY that wakes the relays, in one statement.
    (Arrays here, not a JSON document: PostgreSQL would parse each ~1 kB payload as JSON.)"""
    await conn.execute(_ADD_TO_OUTBOX, topic, event_type, *columns)


_GET_INVOICE = INVOICE_SELECT + " WHERE i.tenant_id = $1 AND i.id = $2"


async def get_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_INVOICE, tenant_id, invoice_id)


_PAYMENTS_OF = "SELECT * FROM payments WHERE invoice_id = $1 ORDER BY acknowledged_at, payment_id"


async def payments_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_PAYMENTS_OF, invoice_id)


_STAGES_OF = (
    "SELECT * FROM stages WHERE invoice_id = $1 ORDER BY sequence NULLS LAST, scheduled_at NULLS LAST, stage_id"
)
_STAGE_HISTORY_OF = (
    "SELECT h.stage_id, h.state, h.at, h.reason FROM stage_history h JOIN stages s USING (stage_id)"
    " WHERE s.invoice_id = $1 ORDER BY h.at, h.rank, h.state"
)


async def timeline_of(conn: asyncpg.Connection, invoice_id: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    stages = await conn.fetch(_STAGES_OF, invoice_id)
    history = await conn.fetch(_STAGE_HISTORY_OF, invoice_id) if stages else []
    return stages, history


async def list_invoices(conn: asyncpg.Connection, tenant_id: str, *, status: str | None, customer: str | None,
                        due_before: date | None, due_after: date | None, after_id: str | None,
                        limit: int) -> list[asyncpg.Record]:
    """Newest first (ids are time-ordered); `after_id` is the last id of the previous page."""
    where: list[str] = ["i.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    if status is not None and status != "open":
        where.append("i.status <> 'open'")  # lets the planner use the partial index invoices_tenant_closed
    for clause, value in (("i.status = ${}", status), ("c.external_id = ${}", customer),
                          ("i.due_date < ${}", due_before), ("i.due_date > ${}", due_after),
                          ("i.id < ${}", after_id)):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    args.append(limit)
    sql = f"{INVOICE_SELECT} WHERE {' AND '.join(where)} ORDER BY i.id DESC LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


# --- consumed events --------------------------------------------------------------------------

_INVOICE_REF = "SELECT id, tenant_id, currency FROM invoices WHERE id = $1"


async def invoice_ref(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_REF, invoice_id)


_RECORD_PAYMENT = """
INSERT INTO payments (payment_id, invoice_id, tenant_id, source, source_reference, currency, amount,
                      amount_applied, balance_remaining, settled, received_at, acknowledged_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (payment_id) DO NOTHING RETURNING true
"""


async def record_payment(conn: asyncpg.Connection, p: PaymentReceived, amounts: dict[str, Decimal]) -> bool:
    """Insert the payment (idempotent by payment_id), `amounts` quantized; True if it is new."""
    return bool(await conn.fetchval(
        _RECORD_PAYMENT,
        p.payment_id, p.invoice_id, p.tenant_id, p.source, p.source_reference, p.currency,
        amounts["amount"], amounts["amount_applied"], amounts["balance_remaining"], p.settled,
        p.received_at, p.acknowledged_at,
    ))


_APPLY_BALANCE = """
UPDATE invoices
   SET balance = $2,
       status = CASE WHEN status = 'void' THEN 'void' WHEN $3 THEN 'paid' ELSE 'open' END,
       balance_as_of = $4, balance_payment_id = $5
 WHERE id = $1 AND (balance_as_of IS NULL OR (balance_as_of, balance_payment_id) < ($4, $5))
"""


async def apply_balance(conn: asyncpg.Connection, invoice_id: str, balance: Decimal, settled: bool,
                        as_of: datetime, payment_id: str) -> bool:
    """Set balance and status from this payment unless a later-acknowledged payment already did."""
    result = await conn.execute(_APPLY_BALANCE, invoice_id, balance, settled, as_of, payment_id)
    return result.endswith(" 1")


_STAGE_INSERT = """
INSERT INTO stages AS s (stage_id, invoice_id, tenant_id, stage, sequence, channel, scheduled_at, planned_at,
                         state, rank, reason, changed_at)
"""
# The merge rule, shared by the per-event and the batch upsert.
_STAGE_MERGE = """
ON CONFLICT (stage_id) DO UPDATE SET
    stage = CASE WHEN {replan} THEN EXCLUDED.stage ELSE s.stage END,
    sequence = CASE WHEN {replan} THEN EXCLUDED.sequence ELSE COALESCE(s.sequence, EXCLUDED.sequence) END,
    channel = CASE WHEN {replan} THEN EXCLUDED.channel ELSE s.channel END,
    scheduled_at = CASE WHEN {replan} THEN EXCLUDED.scheduled_at
                        ELSE COALESCE(s.scheduled_at, EXCLUDED.scheduled_at) END,
    planned_at = GREATEST(s.planned_at, EXCLUDED.planned_at),
    state = CASE WHEN {newer} THEN EXCLUDED.state ELSE s.state END,
    rank = CASE WHEN {newer} THEN EXCLUDED.rank ELSE s.rank END,
    reason = CASE WHEN {newer} THEN EXCLUDED.reason ELSE s.reason END,
    changed_at = CASE WHEN {newer} THEN EXCLUDED.changed_at ELSE s.changed_at END
WHERE s.invoice_id = EXCLUDED.invoice_id
RETURNING s.stage_id
""".format(
    replan="(EXCLUDED.planned_at IS NOT NULL AND (s.planned_at IS NULL OR EXCLUDED.planned_at >= s.planned_at))",
    newer="((EXCLUDED.rank, EXCLUDED.changed_at, EXCLUDED.state) > (s.rank, s.changed_at, s.state))",
)
_OBSERVE = _STAGE_INSERT + """
SELECT o.stage_id, $1, $2, o.stage, o.sequence, o.channel, o.scheduled_at, o.planned_at, o.state, o.rank,
       o.reason, o.at
FROM unnest($3::text[], $4::text[], $5::int[], $6::text[], $7::timestamptz[], $8::timestamptz[], $9::text[],
            $10::smallint[], $11::text[], $12::timestamptz[])
     AS o(stage_id, stage, sequence, channel, scheduled_at, planned_at, state, rank, reason, at)
""" + _STAGE_MERGE


class StageObservation(NamedTuple):
    """One observation of a stage: a row of `observe_stages` (its statements read these columns)."""

    stage_id: str
    stage: str
    sequence: int | None
    channel: str
    scheduled_at: datetime | None
    planned_at: datetime | None
    state: str
    rank: int  # orders states: an observation never moves a stage back (handlers.RANK)
    reason: str | None
    at: datetime


_APPEND_HISTORY = (
    "INSERT INTO stage_history (stage_id, event_id, state, rank, at, reason)"
    " SELECT u.stage_id, $1, u.state, u.rank, u.at, u.reason"
    " FROM unnest($2::text[], $3::text[], $4::smallint[], $5::timestamptz[], $6::text[])"
    "      AS u(stage_id, state, rank, at, reason)"
    " ON CONFLICT (stage_id, event_id) DO NOTHING"
)


async def observe_stages(conn: asyncpg.Connection, tenant_id: str, invoice_id: str, event_id: str,
                         rows: Sequence[StageObservation]) -> int:
    """Upserts each stage (the highest (rank, at, state) observation is its state) and appends the
    observation to the stage's history. Returns how many stages belong to this invoice.
    """
    if not rows:
        return 0
    cols = [list(c) for c in zip(*rows, strict=True)]
    applied = await conn.fetch(_OBSERVE, invoice_id, tenant_id, *cols)
    mine = {r["stage_id"] for r in applied}
    hist = [r for r in rows if r.stage_id in mine]
    if hist:
        await conn.execute(_APPEND_HISTORY, event_id, [r.stage_id for r in hist], [r.state for r in hist],
                           [r.rank for r in hist], [r.at for r in hist], [r.reason for r in hist])
    return len(mine)


# The same upsert for many invoices at once: rows as one JSON document (asyncpg's per-column
# timestamp arrays are several times slower). A stage must appear at most once per statement; the
# batch handlers apply repeated observations of a stage in successive statements ("waves").
_OBSERVE_MANY = _STAGE_INSERT + """
SELECT o.stage_id, o.invoice_id, o.tenant_id, o.stage, o.sequence, o.channel, o.scheduled_at, o.planned_at,
       o.state, o.rank, o.reason, o.at
FROM json_to_recordset($1::text::json)
     AS o(stage_id text, invoice_id text, tenant_id text, stage text, sequence int, channel text,
          scheduled_at timestamptz, planned_at timestamptz, state text, rank smallint, reason text, at timestamptz)
ORDER BY o.stage_id
""" + _STAGE_MERGE


_INVOICE_REFS = "SELECT id, tenant_id, currency FROM invoices WHERE id = ANY($1::text[])"


async def invoice_refs(conn: asyncpg.Connection, invoice_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(_INVOICE_REFS, list(invoice_ids))
    return {r["id"]: r for r in rows}


async def observe_stages_many(conn: asyncpg.Connection, rows: Sequence[dict]) -> int:
    """rows: dicts with the keys of _OBSERVE_MANY's record, each stage_id at most once. Returns how
    many stages were applied (a stage belonging to another invoice is not)."""
    if not rows:
        return 0
    return len(await conn.fetch(_OBSERVE_MANY, orjson.dumps(rows).decode()))


_APPEND_HISTORY_MANY = (
    "INSERT INTO stage_history (stage_id, event_id, state, rank, at, reason)"
    " SELECT h.stage_id, h.event_id, h.state, h.rank, h.at, h.reason"
    " FROM json_to_recordset($1::text::json)"
    "      AS h(stage_id text, event_id uuid, state text, rank smallint, at timestamptz, reason text)"
    " ON CONFLICT (stage_id, event_id) DO NOTHING"
)


async def append_history_many(conn: asyncpg.Connection, rows: Sequence[dict]) -> None:
    """rows: dicts with stage_id, event_id, state, rank, at, reason."""
    if rows:
        await conn.execute(_APPEND_HISTORY_MANY, orjson.dumps(rows).decode())


# --- Idempotency-Keys (idempotency.py) ---------------------------------------------------------

# Claim a key: a new one, one expired (older than $4 hours), or an unfinished claim of the same
# request left for $5 seconds (its process died). True: claimed.
_CLAIM_KEY = """
INSERT INTO idempotency_keys AS k (tenant_id, key, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, status = NULL, headers = NULL, body = NULL,
       created_at = now(), locked_at = now()
 WHERE k.created_at < now() - make_interval(hours => $4)
    OR (k.status IS NULL AND k.fingerprint = EXCLUDED.fingerprint
        AND k.locked_at < now() - make_interval(secs => $5))
RETURNING true
"""
_GET_KEY = "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2"
_COMPLETE_KEY = "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE tenant_id = $1 AND key = $2"
_RELEASE_KEY = "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL"
_PURGE_KEYS = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)"
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def claim_idempotency_key(conn: Conn, tenant_id: str, key: str, fingerprint: bytes, *, ttl_hours: int,
                                stale_seconds: float) -> bool:
    return bool(await conn.fetchval(_CLAIM_KEY, tenant_id, key, fingerprint, ttl_hours, float(stale_seconds)))


async def idempotency_key(conn: Conn, tenant_id: str, key: str) -> asyncpg.Record | None:
    """(fingerprint, status, headers, body); status None: the first request is still in flight."""
    return await conn.fetchrow(_GET_KEY, tenant_id, key)


async def complete_idempotency_key(conn: Conn, tenant_id: str, key: str, status: int, headers: dict[str, Any],
                                   body: bytes) -> None:
    await conn.execute(_COMPLETE_KEY, tenant_id, key, status, headers, body)


async def release_idempotency_key(conn: Conn, tenant_id: str, key: str) -> None:
    await conn.execute(_RELEASE_KEY, tenant_id, key)


async def purge_idempotency_keys(conn: Conn, ttl_hours: int) -> int:
    return int((await conn.execute(_PURGE_KEYS, ttl_hours)).split()[-1])
