"""SQL of deadlines: the instants pauses wait for, by (kind, cause_id, number), taken when due (a
gated one once the gate's watermark is past it). Every function runs on the caller's connection
and transaction."""

from datetime import datetime

import asyncpg
import orjson

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


async def any_deadline_due(conn: asyncpg.Connection) -> bool:
    """Whether any deadline's time has come (one probe of deadlines_at; the gate is read only then)."""
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM deadlines WHERE at <= now())")


async def take_due_deadlines(conn: asyncpg.Connection, watermark: datetime | None, limit: int) -> list[asyncpg.Record]:
    rows = await conn.fetch(_TAKE_DUE, watermark, limit)
    return sorted(rows, key=lambda r: (r["at"], r["kind"], r["cause_id"], r["number"]))
