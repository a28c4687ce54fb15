"""Customers: the upsert of the customers invoices name (one POST, or a bulk import's, set-based), the
PATCH of one, the API's reads, and the CustomerUpdated that every change publishes.

A change bumps the customer's version and writes its CustomerUpdated to the outbox in the statement
that makes it, and that event is built here, in SQL, for all three writers (`_CHANGE`): POST
/v1/invoices is one statement (invoices._CREATE_ONE) in which only the database knows which customer
the external id names and what it held before. The stored row is locked FOR UPDATE before it is
compared, so `changed` and `previous_timezone` name what the change really replaced, whatever ran
concurrently. The event's lane is outbox.lane_sql of the customer id (every CustomerUpdated is
written here, so one customer's events share a lane).
"""

from collections.abc import Sequence
from typing import Any

import asyncpg

from dunning import outbox
from dunning.contracts import CustomerUpdated
from dunning.events import dataschema, dumps, topic_for_type

CUSTOMER_SELECT = (
    "SELECT id, external_id, name, email, cc, locale, timezone, country, subdivision, tags, attributes, phone,"
    " postal_address, version,"
    " created_at, updated_at FROM customers"
)


# The customer's segmentation fields (issue 10) as the events carry them: a JSON object of those that are
# set (NULL, [] and {} are "none", omitted). `r`: a row with the columns country, subdivision, tags, attributes.
def extras_json(r: str) -> str:
    return (
        f"jsonb_strip_nulls(jsonb_build_object('country', {r}.country, 'subdivision', {r}.subdivision,"
        f" 'tags', to_jsonb({r}.tags), 'attributes', {r}.attributes, 'phone', {r}.phone,"
        f" 'postal_address', {r}.postal_address))"
    )


_COLUMNS = "name, email, cc, locale, timezone, country, subdivision, tags, attributes, phone, postal_address"
_WANTED = (
    "n_name, n_email, n_cc, n_locale, n_timezone, n_country, n_subdivision, n_tags, n_attributes, n_phone,"
    " n_postal_address"
)
_TYPE = CustomerUpdated.TYPE


def _change(trace: str) -> str:
    """The CTEs of a change, from `customer_locked` (id, external_id and the stored values, locked; `n_*`
    the values wanted; `$1` the tenant): `customer_changed` (the customers whose values differ, written,
    version + 1), then `customer_published` (their CustomerUpdated, with what changed and the previous
    time zone, in the outbox). `trace`: an SQL expression for the traceparent (text, or NULL)."""
    return f"""
customer_changed AS (
    -- An upsert that always finds its row (locked above): it probes the unique index per customer,
    -- where an UPDATE joined to the locked rows could have the planner scan the table.
    INSERT INTO customers AS c (id, tenant_id, external_id, {_COLUMNS})
    SELECT id, $1, external_id, {_WANTED} FROM customer_locked
     WHERE ({_COLUMNS}) IS DISTINCT FROM ({_WANTED})
    ON CONFLICT (tenant_id, external_id) DO UPDATE
       SET name = EXCLUDED.name, email = EXCLUDED.email, cc = EXCLUDED.cc, locale = EXCLUDED.locale,
           timezone = EXCLUDED.timezone, country = EXCLUDED.country, subdivision = EXCLUDED.subdivision,
           tags = EXCLUDED.tags, attributes = EXCLUDED.attributes, phone = EXCLUDED.phone,
           postal_address = EXCLUDED.postal_address, version = c.version + 1, updated_at = now()
    RETURNING c.id, c.tenant_id, c.external_id, c.version, c.name, c.email, c.cc, c.locale, c.timezone, c.country,
              c.subdivision, c.tags, c.attributes, c.phone, c.postal_address, c.updated_at
), customer_published AS (
    {outbox.INSERT}
    SELECT {outbox.lane_sql("e.id")}, '{CustomerUpdated.topic()}', e.id,
           e.event_id, '{_TYPE}', jsonb_build_object('ce_type', '{_TYPE}', 'ce_id', e.event_id) || e.trace,
           convert_to((jsonb_build_object(
               'specversion', '1.0', 'id', e.event_id, 'source', '{CustomerUpdated.SOURCE}', 'type', '{_TYPE}',
               'subject', e.id, 'time', e.at, 'datacontenttype', 'application/json',
               'dataschema', '{dataschema(_TYPE)}', 'tenantid', e.tenant_id,
               'data', jsonb_build_object(
                   'customer_id', e.id, 'tenant_id', e.tenant_id, 'external_id', e.external_id,
                   'version', e.version, 'name', e.name, 'email', e.email, 'cc', to_jsonb(e.cc),
                   'locale', e.locale, 'timezone', e.timezone, 'changed', to_jsonb(e.changed),
                   'previous_timezone', e.previous_timezone, 'updated_at', e.at) || {extras_json("e")})
               || e.trace)::text, 'UTF8')
      FROM (SELECT ch.*, l.timezone AS previous_timezone, gen_random_uuid() AS event_id,
                   array_remove(ARRAY[CASE WHEN l.name <> ch.name THEN 'name' END,
                                      CASE WHEN l.email <> ch.email THEN 'email' END,
                                      CASE WHEN l.cc <> ch.cc THEN 'cc' END,
                                      CASE WHEN l.locale <> ch.locale THEN 'locale' END,
                                      CASE WHEN l.timezone <> ch.timezone THEN 'timezone' END,
                                      CASE WHEN l.country IS DISTINCT FROM ch.country THEN 'country' END,
                                      CASE WHEN l.subdivision IS DISTINCT FROM ch.subdivision THEN 'subdivision' END,
                                      CASE WHEN l.tags IS DISTINCT FROM ch.tags THEN 'tags' END,
                                      CASE WHEN l.attributes IS DISTINCT FROM ch.attributes THEN 'attributes' END,
                                      CASE WHEN l.phone IS DISTINCT FROM ch.phone THEN 'phone' END,
                                      CASE WHEN l.postal_address IS DISTINCT FROM ch.postal_address
                                           THEN 'postal_address' END],
                                NULL) AS changed,
                   to_char(ch.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at,
                   jsonb_strip_nulls(jsonb_build_object('traceparent', {trace})) AS trace
              FROM customer_changed AS ch JOIN customer_locked AS l USING (id)) AS e
    RETURNING 1
)"""


# The optional fields an invoice's customer may bring (NULL: not given, the stored value stays; [] or
# {}: cleared). A new country without a subdivision drops the stored subdivision (it was the old
# country's). `i` the input (country, subdivision text; tags, attributes jsonb), `c` the stored row.
_GIVEN_TAGS = "nullif(ARRAY(SELECT jsonb_array_elements_text(i.tags)), '{}')"
_WANTED_EXTRAS = f"""
           coalesce(i.country, c.country) AS n_country,
           CASE WHEN i.subdivision IS NOT NULL THEN i.subdivision
                WHEN i.country IS DISTINCT FROM c.country AND i.country IS NOT NULL THEN NULL
                ELSE c.subdivision END AS n_subdivision,
           CASE WHEN i.tags IS NULL THEN c.tags ELSE {_GIVEN_TAGS} END AS n_tags,
           CASE WHEN i.attributes IS NULL THEN c.attributes ELSE nullif(i.attributes, '{{}}'::jsonb) END
               AS n_attributes,
           coalesce(i.phone, c.phone) AS n_phone, coalesce(i.postal_address, c.postal_address) AS n_postal_address"""


def upsert_ctes(customer_in: str, trace: str) -> str:
    """The CTEs (after WITH) that upsert the customers `customer_in` selects (id for a new one,
    external_id, name, email, locale, timezone, country, subdivision, tags (jsonb), attributes (jsonb), phone,
    postal_address (jsonb);
    `$1` is the tenant) and leave `customer` (external_id, id, and its country, subdivision, tags and
    attributes after the write) for each. A changed customer is updated and published (cc is left as
    it is, and so are the optional fields the input leaves NULL); an unchanged one only locked. A
    customer created by a request that committed after this statement's snapshot keeps that request's
    details (a no-op update locks it and returns its id)."""
    return f"""customer_in AS (
    {customer_in}
), customer_locked AS (
    SELECT c.id, c.external_id, c.name, c.email, c.cc, c.locale, c.timezone, c.country, c.subdivision, c.tags,
           c.attributes, c.phone, c.postal_address,
           i.name AS n_name, i.email AS n_email, c.cc AS n_cc, i.locale AS n_locale, i.timezone AS n_timezone,
           {_WANTED_EXTRAS}
      FROM customer_in AS i
     CROSS JOIN LATERAL (SELECT * FROM customers
                          WHERE tenant_id = $1 AND external_id = i.external_id FOR UPDATE) AS c
), {_change(trace)}, customer_inserted AS (
    INSERT INTO customers AS c (id, tenant_id, external_id, name, email, locale, timezone, country, subdivision,
                                tags, attributes, phone, postal_address)
    SELECT id, $1, external_id, name, email, locale, timezone, country, subdivision, {_GIVEN_TAGS},
           nullif(attributes, '{{}}'::jsonb), phone, postal_address
      FROM customer_in AS i
     WHERE external_id NOT IN (SELECT external_id FROM customer_locked)
    ON CONFLICT (tenant_id, external_id) DO UPDATE SET version = c.version
    RETURNING c.external_id, c.id, c.country, c.subdivision, c.tags, c.attributes, c.phone, c.postal_address
), customer AS (
    SELECT external_id, id, country, subdivision, tags, attributes, phone, postal_address FROM customer_inserted
    UNION ALL
    SELECT external_id, id, n_country, n_subdivision, n_tags, n_attributes, n_phone, n_postal_address
      FROM customer_locked
)"""


# --- PATCH ----------------------------------------------------------------------------------------

_LOCK = CUSTOMER_SELECT + " WHERE tenant_id = $1 AND id = $2 FOR UPDATE"


async def lock_customer(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> asyncpg.Record | None:
    """The customer, locked until the transaction ends; None if it is not the tenant's."""
    return await conn.fetchrow(_LOCK, tenant_id, customer_id)


# $9..$12 and $14, $15: the optional fields' new values, $13 which of them the patch gives (a null given clears it;
# a new country without a subdivision clears the subdivision).
_UPDATE = f"""
WITH customer_locked AS (
    SELECT c.id, c.external_id, c.name, c.email, c.cc, c.locale, c.timezone, c.country, c.subdivision, c.tags,
           c.attributes, c.phone, c.postal_address,
           coalesce($3, c.name) AS n_name, coalesce($4, c.email) AS n_email, coalesce($5::text[], c.cc) AS n_cc,
           coalesce($6, c.locale) AS n_locale, coalesce($7, c.timezone) AS n_timezone,
           CASE WHEN 'country' = ANY($13::text[]) THEN $9::text ELSE c.country END AS n_country,
           CASE WHEN 'subdivision' = ANY($13::text[]) THEN $10::text
                WHEN 'country' = ANY($13::text[]) AND $9::text IS DISTINCT FROM c.country THEN NULL
                ELSE c.subdivision END AS n_subdivision,
           CASE WHEN 'tags' = ANY($13::text[]) THEN nullif($11::text[], '{{}}') ELSE c.tags END AS n_tags,
           CASE WHEN 'attributes' = ANY($13::text[]) THEN nullif($12::jsonb, '{{}}'::jsonb) ELSE c.attributes END
               AS n_attributes,
           CASE WHEN 'phone' = ANY($13::text[]) THEN $14::text ELSE c.phone END AS n_phone,
           CASE WHEN 'postal_address' = ANY($13::text[]) THEN $15::jsonb ELSE c.postal_address END AS n_postal_address
      FROM customers AS c WHERE c.tenant_id = $1 AND c.id = $2 FOR UPDATE
), {_change("$8::text")}
SELECT version,
       (SELECT {outbox.WAKE_RELAYS} FROM (SELECT 1 FROM customer_published LIMIT 1) AS one) AS notified
  FROM customer_changed
"""


async def update_customer(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, values: dict[str, Any], traceparent: str | None
) -> asyncpg.Record | None:
    """Set `values` (name, email, cc, locale, timezone, country, subdivision, tags, attributes, phone,
    postal_address: those given; the last six may be None to clear them) and publish the change; None if
    they change nothing
    (the version stays)."""
    fields = ("name", "email", "cc", "locale", "timezone")
    extras = ("country", "subdivision", "tags", "attributes")
    contacts = ("phone", "postal_address")
    return await conn.fetchrow(
        _UPDATE,
        tenant_id,
        customer_id,
        *(values.get(f) for f in fields),
        traceparent,
        *(values.get(f) for f in extras),
        [f for f in (*extras, *contacts) if f in values],
        *(values.get(f) for f in contacts),
    )


# --- reads ----------------------------------------------------------------------------------------

_GET = CUSTOMER_SELECT + " WHERE tenant_id = $1 AND id = $2"


async def get_customer(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, tenant_id, customer_id)


async def list_customers(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    external_id: str | None,
    email: str | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """In external id order (the unique index's, byte order); `after` is the last external id of the
    previous page."""
    where: list[str] = ["tenant_id = $1"]
    args: list[Any] = [tenant_id]
    for clause, value in (
        ("external_id = ${}", external_id),
        ("lower(email) = lower(${})", email),
        ("external_id > ${}", after),
    ):
        if value is not None:
            args.append(value)
            where.append(clause.format(len(args)))
    args.append(limit)
    return await conn.fetch(
        f"{CUSTOMER_SELECT} WHERE {' AND '.join(where)} ORDER BY external_id LIMIT ${len(args)}", *args
    )


_OPEN_INVOICES = (
    "SELECT id, external_id, number, currency, balance, due_date FROM invoices"
    " WHERE tenant_id = $1 AND customer_id = $2 AND status = 'open' ORDER BY id DESC LIMIT $3"
)


async def open_invoices_of(
    conn: asyncpg.Connection, tenant_id: str, customer_id: str, limit: int
) -> list[asyncpg.Record]:
    """The customer's open invoices, newest first, at most `limit`."""
    return await conn.fetch(_OPEN_INVOICES, tenant_id, customer_id, limit)


_BALANCES = (
    "SELECT currency, sum(balance) AS balance FROM invoices"
    " WHERE tenant_id = $1 AND customer_id = $2 AND status = 'open' GROUP BY currency ORDER BY currency"
)


async def balances_of(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> Sequence[asyncpg.Record]:
    """The sum of the open balances per currency."""
    return await conn.fetch(_BALANCES, tenant_id, customer_id)


# --- other events keyed by customer (issue 9) -------------------------------------------------------

_ADD_CUSTOMER_EVENTS = outbox.insert_and_wake(
    f"SELECT {outbox.lane_sql('k')}, t, k, i, y, h::jsonb, p FROM unnest($1::text[], $2::text[], $3::uuid[],"
    " $4::text[], $5::text[], $6::bytea[]) AS u(t, k, i, y, h, p)"
)


async def add_customer_events(conn: asyncpg.Connection, envelopes: Sequence[dict[str, Any]]) -> None:
    """Write envelopes keyed by a customer id (HoldPlaced, HoldReleased, PaymentPlanAgreed, ...) to the
    outbox in the lane of CustomerUpdated (outbox.lane_sql of the customer id), so every event of one
    customer leaves in the order it was written. Call inside the transaction that changes state."""
    if not envelopes:
        return
    mapping = topic_for_type()
    await conn.execute(
        _ADD_CUSTOMER_EVENTS,
        [mapping[e["type"]] for e in envelopes],
        [e["subject"] for e in envelopes],
        [e["id"] for e in envelopes],
        [e["type"] for e in envelopes],
        [dumps(outbox.headers_of(e)).decode() for e in envelopes],
        [dumps(e) for e in envelopes],
    )
