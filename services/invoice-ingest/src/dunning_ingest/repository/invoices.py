"""Invoices and their customers: creating one or a bulk import's, reading them back (with their
payments and timeline, for the API). Bulk writes go through `unnest` arrays in one statement each,
sorted by external id so concurrent imports lock rows in the same order (no deadlocks)."""

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from dunning import outbox
from dunning.tracing import current_traceparent
from dunning_ingest.repository import customers

INVOICE_SELECT = """
SELECT i.id, i.external_id, i.number, i.status, i.currency, i.amount_due, i.balance, i.issue_date,
       i.due_date, i.payment_url, i.metadata, i.created_at, i.customer_id, i.version, i.updated_at,
       i.closed_reason, i.voided_at, i.written_off_at, i.written_off_amount, i.with_agency_at,
       c.external_id AS customer_external_id, c.name AS customer_name, c.email AS customer_email,
       c.locale AS customer_locale, c.timezone AS customer_timezone, c.country AS customer_country,
       c.subdivision AS customer_subdivision, c.tags AS customer_tags, c.attributes AS customer_attributes,
       c.phone AS customer_phone, c.postal_address AS customer_postal_address
FROM invoices i JOIN customers c ON c.id = i.customer_id
"""

# The invoice's customer ($3 its id if new, $4..$8 and $26..$31 its fields), upserted unless the invoice
# exists; a change is published with the traceparent of the InvoiceIssued's headers ($23). See
# customers.upsert_ctes.
_CUSTOMER_OF_ONE = customers.upsert_ctes(
    "SELECT $3::text AS id, $4::text AS external_id, $5::text AS name, $6::text AS email, $7::text AS locale,"
    " $8::text AS timezone, $26::text AS country, $27::text AS subdivision, $28::jsonb AS tags,"
    " $29::jsonb AS attributes, $30::text AS phone, $31::jsonb AS postal_address"
    " WHERE NOT EXISTS (SELECT 1 FROM existing)",
    trace="$23::jsonb ->> 'traceparent'",
)
# Most customers have none of the optional fields (a subdivision needs a country): no JSON to build.
_NO_EXTRAS = (
    "customer.country IS NULL AND customer.tags IS NULL AND customer.attributes IS NULL"
    " AND customer.phone IS NULL AND customer.postal_address IS NULL"
)
_CREATE_ONE = f"""
WITH existing AS (
    SELECT id, content_hash FROM invoices WHERE tenant_id = $1 AND external_id = $2
), {_CUSTOMER_OF_ONE}, created AS (
    INSERT INTO invoices (id, tenant_id, external_id, number, customer_id, currency, amount_due, balance,
                          issue_date, due_date, payment_url, metadata, content_hash, created_at)
    SELECT $9, $1, $2, $10, customer.id, $11, $12, $12, $13, $14, $15, $16, $17, $18 FROM customer
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING id, customer_id
), queued AS (
    -- the payload: $24 ends inside `"customer_id":"`, $25 starts after its closing quote; the customer's
    -- id and its stored segmentation fields (messages.OutboxRow) go in between
    {outbox.INSERT}
    SELECT $19, $20, created.id, $21, $22, $23,
           $24::bytea || convert_to(created.customer_id || '"' || CASE WHEN {_NO_EXTRAS} THEN '' ELSE (
               SELECT coalesce(string_agg(',' || to_json(x.k)::text || ':' || x.v::text, '' ORDER BY x.k), '')
                 FROM jsonb_each({customers.extras_json("customer")}) AS x(k, v)) END, 'UTF8') || $25::bytea
      FROM created JOIN customer ON customer.id = created.customer_id
    RETURNING 1
)
SELECT (SELECT id FROM created) AS created_id, (SELECT customer_id FROM created) AS customer_id,
       (SELECT CASE WHEN {_NO_EXTRAS} THEN NULL ELSE {customers.extras_json("customer")} END FROM customer)
           AS customer_extras,
       (SELECT id FROM existing) AS existing_id, (SELECT content_hash FROM existing) AS existing_hash,
       (SELECT {outbox.WAKE_RELAYS} FROM queued) AS notified
"""


async def create_one(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    invoice_id: str,
    new_customer_id: str,
    inv: Any,
    content_hash: bytes,
    created_at: datetime,
    event: Any,
    topic: str,
    event_type: str,
) -> asyncpg.Record:
    """One statement, atomic without BEGIN/COMMIT: upsert the customer, insert the invoice unless
    (tenant, external_id) exists, and if it was inserted, its event in the outbox (the payload gets
    the customer's id spliced in, see messages.OutboxRow) and a NOTIFY that wakes the relays."""
    cust = inv.customer
    return await conn.fetchrow(
        _CREATE_ONE,
        tenant_id,
        inv.external_id,
        new_customer_id,
        cust.external_id,
        cust.name,
        cust.email,
        cust.locale,
        cust.timezone,
        invoice_id,
        inv.number,
        inv.currency,
        inv.amount_due,
        inv.issue_date,
        inv.due_date,
        inv.payment_url,
        inv.metadata,
        content_hash,
        created_at,
        event.lane,
        topic,
        event.event_id,
        event_type,
        event.headers,
        event.head,
        event.tail,
        cust.country,
        cust.subdivision,
        cust.tags,
        cust.attributes,
        cust.phone,
        cust.postal_address,
    )


_EXISTING_BY_EXTERNAL_ID = (
    "SELECT i.external_id, i.id, i.content_hash FROM json_array_elements_text($2::json) AS e(external_id)"
    " CROSS JOIN LATERAL (SELECT external_id, id, content_hash FROM invoices"
    "                      WHERE tenant_id = $1 AND external_id = e.external_id LIMIT 1) AS i"
)


async def existing_by_external_id(
    conn: asyncpg.Connection, tenant_id: str, external_ids: Sequence[str]
) -> dict[str, tuple[str, bytes]]:
    # One unique-index probe per id (LATERAL ... LIMIT 1), whatever the planner's statistics say: right
    # after an import they are stale and would have it scan all of the tenant's invoices instead.
    rows = await conn.fetch(_EXISTING_BY_EXTERNAL_ID, tenant_id, list(external_ids))
    return {r["external_id"]: (r["id"], bytes(r["content_hash"])) for r in rows}


# A bulk import's customers, as columns sorted by external id; $8 the traceparent. See customers.upsert_ctes.
# ($11, $12: tags and attributes as JSON text, one per customer, NULL: not given; $13 the phones, $14
# the postal addresses as JSON text.)
_CUSTOMERS_OF_MANY = customers.upsert_ctes(
    "SELECT id, external_id, name, email, locale, timezone, country, subdivision, tags::jsonb AS tags,"
    " attributes::jsonb AS attributes, phone, postal_address::jsonb AS postal_address"
    " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $9::text[],"
    " $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])"
    " AS u(id, external_id, name, email, locale, timezone, country, subdivision, tags, attributes, phone,"
    " postal_address)",
    trace="$8::text",
)
_UPSERT_CUSTOMERS = f"""
WITH {_CUSTOMERS_OF_MANY}
SELECT external_id, id, {customers.extras_json("customer")} AS extras,
       (SELECT {outbox.WAKE_RELAYS} FROM (SELECT 1 FROM customer_published LIMIT 1) AS one)
  FROM customer
"""


class CustomerRow(NamedTuple):
    """A customer to write: a row of `upsert_customers` (`id` is used if the customer is new; the
    optional fields None: left as stored)."""

    id: str
    external_id: str
    name: str
    email: str
    locale: str
    timezone: str
    country: str | None = None
    subdivision: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, str] | None = None
    phone: str | None = None
    postal_address: dict[str, Any] | None = None


async def upsert_customers(
    conn: asyncpg.Connection, tenant_id: str, rows: Sequence[CustomerRow]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Returns external_id -> (customer id, its segmentation fields after the write as the events carry
    them), in one statement (customers.upsert_ctes).

    New customers are inserted; changed ones updated (version + 1) and published as CustomerUpdated;
    unchanged ones are left alone (a nightly sync re-sends the same customers: rewriting them would
    only make dead rows).
    """
    if not rows:
        return {}
    cols = [list(c) for c in zip(*sorted(rows, key=lambda r: r.external_id), strict=True)]
    tags, attributes = ([None if v is None else orjson.dumps(v).decode() for v in col] for col in cols[8:10])
    addresses = [None if v is None else orjson.dumps(v).decode() for v in cols[11]]
    result = await conn.fetch(
        _UPSERT_CUSTOMERS,
        tenant_id,
        *cols[:6],
        current_traceparent(),
        *cols[6:8],
        tags,
        attributes,
        cols[10],
        addresses,
    )
    return {r["external_id"]: (r["id"], r["extras"]) for r in result}


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


async def insert_invoices(
    conn: asyncpg.Connection, tenant_id: str, created_at: datetime, rows: list[dict[str, Any]]
) -> set[str] | None:
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
    " $7::bytea[]) AS u(l, k, i, h, p)"
)


async def add_to_outbox(conn: asyncpg.Connection, topic: str, event_type: str, columns: Sequence[list]) -> None:
    """columns: lane, key, event_id, headers (JSON text), payload (bytes) of one event type and topic:
    what dunning.outbox.add_many writes, and the NOTIFY that wakes the relays, in one statement.
    (Arrays here, not a JSON document: PostgreSQL would parse each ~1 kB payload as JSON.)"""
    await conn.execute(_ADD_TO_OUTBOX, topic, event_type, *columns)


# The invoice with its late charges (invoice_charges, `charges_*`: NULL when nothing was ever charged).
_GET_INVOICE = (
    INVOICE_SELECT.replace(
        "\nFROM invoices i",
        ", ch.invoice_id IS NOT NULL AS charged, ch.late_fees AS charges_late_fees,"
        " ch.interest AS charges_interest, ch.last_assessed_at AS charges_last_assessed_at,"
        " ch.waived_late_fees AS charges_waived_late_fees, ch.waived_interest AS charges_waived_interest,"
        " ch.waived_at AS charges_waived_at, ch.waived_by AS charges_waived_by,"
        " ch.waived_reason AS charges_waived_reason\nFROM invoices i",
    )
    + " LEFT JOIN invoice_charges ch ON ch.invoice_id = i.id WHERE i.tenant_id = $1 AND i.id = $2"
)


async def get_invoice(conn: asyncpg.Connection, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET_INVOICE, tenant_id, invoice_id)


_PAYMENTS_OF = "SELECT * FROM payments WHERE invoice_id = $1 ORDER BY acknowledged_at, payment_id"


async def payments_of(conn: asyncpg.Connection, invoice_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(_PAYMENTS_OF, invoice_id)


_STAGES_OF = (
    "SELECT * FROM stages WHERE invoice_id = $1 ORDER BY sequence NULLS LAST, scheduled_at NULLS LAST, stage_id"
)
_STAGE_HISTORY_OF = (
    "SELECT h.stage_id, h.state, h.at, h.reason, h.previous_scheduled_at, h.scheduled_at"
    " FROM stage_history h JOIN stages s USING (stage_id)"
    " WHERE s.invoice_id = $1 ORDER BY h.at, h.rank, h.state"
)


async def timeline_of(conn: asyncpg.Connection, invoice_id: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    stages = await conn.fetch(_STAGES_OF, invoice_id)
    history = await conn.fetch(_STAGE_HISTORY_OF, invoice_id) if stages else []
    return stages, history


async def list_invoices(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    status: str | None,
    customer: str | None,
    due_before: date | None,
    due_after: date | None,
    after_id: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first (ids are time-ordered); `after_id` is the last id of the previous page."""
    where: list[str] = ["i.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    if status in ("open", "with_agency"):  # with_agency: open, handed to a collection agency (shown so)
        where.append(f"i.with_agency_at IS {'NULL' if status == 'open' else 'NOT NULL'}")
        status = "open"
    if status is not None and status != "open":
        where.append("i.status <> 'open'")  # lets the planner use the partial index invoices_tenant_closed
    for clause, value in (
        ("i.status = ${}", status),
        ("c.external_id = ${}", customer),
        ("i.due_date < ${}", due_before),
        ("i.due_date > ${}", due_after),
        ("i.id < ${}", after_id),
    ):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    args.append(limit)
    sql = f"{INVOICE_SELECT} WHERE {' AND '.join(where)} ORDER BY i.id DESC LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


_INVOICE_REF = "SELECT id, tenant_id, currency FROM invoices WHERE id = $1"


async def invoice_ref(conn: asyncpg.Connection, invoice_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_INVOICE_REF, invoice_id)


_INVOICE_REFS = "SELECT id, tenant_id, currency FROM invoices WHERE id = ANY($1::text[])"


async def invoice_refs(conn: asyncpg.Connection, invoice_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(_INVOICE_REFS, list(invoice_ids))
    return {r["id"]: r for r in rows}
