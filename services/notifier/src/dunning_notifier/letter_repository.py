"""SQL for letters and their tracking events (migration 20261202300000_letters.sql).

A letter's PDF is saved before it is posted to the provider and replaced on a later attempt only
while no provider has accepted it (what was accepted is what the customer gets: the API serves it).
"""

import hashlib
from datetime import date, datetime
from typing import Any

import asyncpg

_SAVE_PDF = (
    "INSERT INTO letters (delivery_id, tenant_id, paper, pdf, pdf_sha256) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (delivery_id) DO UPDATE SET paper = excluded.paper, pdf = excluded.pdf,"
    " pdf_sha256 = excluded.pdf_sha256, rendered_at = now()"
    " WHERE letters.provider_letter_id IS NULL"
)


async def save_pdf(
    conn: asyncpg.Pool | asyncpg.Connection, delivery_id: str, tenant_id: str, paper: str, pdf: bytes
) -> None:
    """Keep the PDF about to be posted (unless an earlier attempt's was accepted)."""
    await conn.execute(_SAVE_PDF, delivery_id, tenant_id, paper, pdf, hashlib.sha256(pdf).hexdigest())


_ACCEPTED = (
    "UPDATE letters SET provider_letter_id = $2, expected_delivery_date = $3, accepted_at = coalesce(accepted_at, $4)"
    " WHERE delivery_id = $1"
)


async def accepted(
    conn: asyncpg.Pool | asyncpg.Connection, delivery_id: str, letter_id: str, expected: date | None, at: datetime
) -> None:
    await conn.execute(_ACCEPTED, delivery_id, letter_id, expected, at)


_GET_PDF = "SELECT pdf, pdf_sha256, provider_letter_id FROM letters WHERE tenant_id = $1 AND delivery_id = $2"


async def get_pdf(pool: asyncpg.Pool, tenant_id: str, delivery_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(_GET_PDF, tenant_id, delivery_id)


_GET_LETTER = (
    "SELECT delivery_id, paper, pdf_sha256, octet_length(pdf) AS pdf_bytes, provider_letter_id,"
    " expected_delivery_date, rendered_at, accepted_at FROM letters WHERE tenant_id = $1 AND delivery_id = $2"
)
_EVENTS = (
    "SELECT event_id, event_type, occurred_at, received_at FROM letter_events WHERE delivery_id = $1"
    " ORDER BY occurred_at, event_id"
)


async def get_letter(
    pool: asyncpg.Pool, tenant_id: str, delivery_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """A letter's facts (no PDF) and its tracking events in order; None if no such letter."""
    row = await pool.fetchrow(_GET_LETTER, tenant_id, delivery_id)
    if row is None:
        return None
    return row, await pool.fetch(_EVENTS, delivery_id)


_RECORD_EVENT = (
    "INSERT INTO letter_events (event_id, delivery_id, event_type, occurred_at, body)"
    " SELECT $1, l.delivery_id, $3, $4, $5::jsonb FROM letters l WHERE l.provider_letter_id = $2"
    " ON CONFLICT (event_id) DO NOTHING RETURNING delivery_id"
)
_LETTER_OF = "SELECT delivery_id FROM letters WHERE provider_letter_id = $1"


async def record_event(
    pool: asyncpg.Pool, event_id: str, letter_id: str, event_type: str, occurred_at: datetime, body: dict[str, Any]
) -> tuple[str | None, bool]:
    """(the letter's delivery id or None if no letter has that provider id, whether the event is new)."""
    async with pool.acquire() as conn:
        inserted = await conn.fetchval(_RECORD_EVENT, event_id, letter_id, event_type, occurred_at, body)
        if inserted is not None:
            return inserted, True
        return await conn.fetchval(_LETTER_OF, letter_id), False
