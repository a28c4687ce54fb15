"""SQL for the tenant's collection agency and its cases (agency.py), and what a case file quotes of
the notifier's own records: the invoice's deliveries and tasks, the customer's contacts."""

from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

_AGENCY_COLUMNS = "tenant_id, name, mode, url, contact_email, secret, secret_rotated_at, created_at, updated_at"

_UPSERT_AGENCY = f"""
INSERT INTO agencies AS a (tenant_id, name, mode, url, contact_email, secret, secret_rotated_at)
VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6::text IS NOT NULL THEN now() END)
ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name, mode = excluded.mode, url = excluded.url,
    contact_email = excluded.contact_email, secret = coalesce(a.secret, excluded.secret),
    secret_rotated_at = CASE WHEN a.secret IS NULL THEN excluded.secret_rotated_at ELSE a.secret_rotated_at END,
    updated_at = now()
RETURNING {_AGENCY_COLUMNS}
"""


async def upsert_agency(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    name: str,
    mode: str,
    url: str | None,
    contact_email: str,
    secret: str | None,
) -> asyncpg.Record:
    """The tenant's agency set; an existing secret is kept (`secret` is only used when there is none)."""
    return await conn.fetchrow(_UPSERT_AGENCY, tenant_id, name, mode, url, contact_email, secret)


_GET_AGENCY = f"SELECT {_AGENCY_COLUMNS} FROM agencies WHERE tenant_id = $1"


async def get_agency(db: Executor, tenant_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(_GET_AGENCY + (" FOR UPDATE" if lock else ""), tenant_id)


_ROTATE = (
    "UPDATE agencies SET secret = $2, secret_rotated_at = now(), updated_at = now()"
    f" WHERE tenant_id = $1 AND mode = 'webhook' RETURNING {_AGENCY_COLUMNS}"
)


async def rotate_secret(conn: asyncpg.Connection, tenant_id: str, secret: str) -> asyncpg.Record | None:
    return await conn.fetchrow(_ROTATE, tenant_id, secret)


CASE_COLUMNS = (
    "case_id, tenant_id, invoice_id, customer_id, delivery_id, agency_name, mode, state, case_file, balance,"
    " currency, attempts, last_error, acknowledged_by, handed_over_at, created_at, updated_at"
)

_INSERT_CASE = f"""
WITH new AS (
    INSERT INTO agency_cases (case_id, tenant_id, invoice_id, customer_id, delivery_id, agency_name, mode, state,
                              case_file, balance, currency)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (delivery_id) DO NOTHING
    RETURNING {CASE_COLUMNS}
)
SELECT * FROM new
UNION ALL
SELECT {CASE_COLUMNS} FROM agency_cases WHERE delivery_id = $5 AND NOT EXISTS (SELECT 1 FROM new)
"""


async def insert_case(conn: asyncpg.Connection, case: dict[str, Any]) -> asyncpg.Record:
    """The delivery's case: made now, or the one an earlier attempt made (delivery_id unique)."""
    return await conn.fetchrow(
        _INSERT_CASE,
        case["case_id"],
        case["tenant_id"],
        case["invoice_id"],
        case["customer_id"],
        case["delivery_id"],
        case["agency_name"],
        case["mode"],
        case["state"],
        case["case_file"],
        case["balance"],
        case["currency"],
    )


_NOTE_ATTEMPT = (
    "UPDATE agency_cases SET attempts = attempts + 1, last_error = $2, updated_at = now() WHERE case_id = $1"
)


async def note_attempt(db: Executor, case_id: str, error: str | None) -> None:
    await db.execute(_NOTE_ATTEMPT, case_id, error)


_HAND_OVER = f"""
UPDATE agency_cases SET state = 'handed_over', handed_over_at = now(), acknowledged_by = $2, last_error = NULL,
       updated_at = now()
 WHERE case_id = $1 AND state <> 'handed_over'
RETURNING {CASE_COLUMNS}
"""


async def hand_over(conn: asyncpg.Connection, case_id: str, acknowledged_by: str | None) -> asyncpg.Record | None:
    """The case handed over now (None: it already was)."""
    return await conn.fetchrow(_HAND_OVER, case_id, acknowledged_by)


_LIST_CASES = f"""
SELECT {CASE_COLUMNS} FROM agency_cases WHERE tenant_id = $1
   AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR invoice_id = $3)
   AND ($4::text IS NULL OR case_id < $4)
 ORDER BY case_id DESC LIMIT $5
"""


async def list_cases(
    db: Executor, tenant_id: str, *, state: str | None, invoice_id: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(_LIST_CASES, tenant_id, state, invoice_id, before, limit)


_GET_CASE = f"SELECT {CASE_COLUMNS} FROM agency_cases WHERE tenant_id = $1 AND case_id = $2"


async def get_case(db: Executor, tenant_id: str, case_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await db.fetchrow(_GET_CASE + (" FOR UPDATE" if lock else ""), tenant_id, case_id)


# What the case file quotes: every delivery of the invoice (but the agency stage's own), oldest first.
_DELIVERIES_OF = """
SELECT delivery_id, stage, channel, template, state, recipient, cc, attempts, provider_message_id,
       last_error_code, last_error, created_at, sent_at, cancel_reason, cancelled_at, updated_at
  FROM deliveries WHERE tenant_id = $1 AND invoice_id = $2 AND delivery_id <> $3 ORDER BY created_at, delivery_id
"""


async def deliveries_of(db: Executor, tenant_id: str, invoice_id: str, but: str) -> list[asyncpg.Record]:
    return await db.fetch(_DELIVERIES_OF, tenant_id, invoice_id, but)


_CONTACT = "SELECT * FROM contacts WHERE tenant_id = $1 AND customer_id = $2"


async def contact_of(db: Executor, tenant_id: str, customer_id: str | None) -> asyncpg.Record | None:
    if customer_id is None:
        return None
    return await db.fetchrow(_CONTACT, tenant_id, customer_id)


_HANDED_OVER_WEBHOOK_CASE = f"""
SELECT {CASE_COLUMNS} FROM agency_cases
 WHERE tenant_id = $1 AND invoice_id = $2 AND state = 'handed_over' AND mode = 'webhook'
 ORDER BY case_id DESC LIMIT 1
"""


async def handed_over_webhook_case(db: Executor, tenant_id: str, invoice_id: str) -> asyncpg.Record | None:
    """The invoice's case the agency received by webhook (the newest), if any."""
    return await db.fetchrow(_HANDED_OVER_WEBHOOK_CASE, tenant_id, invoice_id)


# The agency's `case.settled` message: a delivery on the agency channel written here, not through
# delivery_inserts.insert_delivery, whose terminal-stop check would record it cancelled (the invoice is stopped:
# with_agency, then settled; this message is what follows the stop). One per invoice (deliveries_once).
_INSERT_AGENCY_MESSAGE = """
INSERT INTO deliveries (delivery_id, tenant_id, invoice_id, stage_id, stage, channel, template, payload,
                        source_event_id, customer_id)
VALUES ($1, $2, $3, $4, $5, 'agency', $5, $6, $7, $8)
ON CONFLICT (tenant_id, invoice_id, stage, channel) DO NOTHING
RETURNING delivery_id
"""


async def insert_agency_message(
    conn: asyncpg.Connection,
    *,
    delivery_id: str,
    tenant_id: str,
    invoice_id: str,
    stage_id: str,
    stage: str,
    payload: dict[str, Any],
    source_event_id: str,
    customer_id: str | None,
) -> str | None:
    return await conn.fetchval(
        _INSERT_AGENCY_MESSAGE,
        delivery_id,
        tenant_id,
        invoice_id,
        stage_id,
        stage,
        payload,
        source_event_id,
        customer_id,
    )
