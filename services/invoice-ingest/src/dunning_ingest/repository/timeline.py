"""The dunning timeline: each stage's state from the events that observe it (planned, re-planned,
escalated, sent, failed, cancelled), and every observation in its history (a re-planned stage's
entry with its previous and new time)."""

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
import orjson

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
_OBSERVE = (
    _STAGE_INSERT
    + """
SELECT o.stage_id, $1, $2, o.stage, o.sequence, o.channel, o.scheduled_at, o.planned_at, o.state, o.rank,
       o.reason, o.at
FROM unnest($3::text[], $4::text[], $5::int[], $6::text[], $7::timestamptz[], $8::timestamptz[], $9::text[],
            $10::smallint[], $11::text[], $12::timestamptz[])
     AS o(stage_id, stage, sequence, channel, scheduled_at, planned_at, state, rank, reason, at)
"""
    + _STAGE_MERGE
)


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
    # History only: a re-planned stage's previous and new time (None: added, or dropped, by the new plan).
    moved_from: datetime | None = None
    moved_to: datetime | None = None


_OBSERVED = 10  # the fields above the history-only ones: the columns of _OBSERVE


_APPEND_HISTORY = (
    "INSERT INTO stage_history (stage_id, event_id, state, rank, at, reason, previous_scheduled_at, scheduled_at)"
    " SELECT u.stage_id, $1, u.state, u.rank, u.at, u.reason, u.moved_from, u.moved_to"
    " FROM unnest($2::text[], $3::text[], $4::smallint[], $5::timestamptz[], $6::text[], $7::timestamptz[],"
    "             $8::timestamptz[])"
    "      AS u(stage_id, state, rank, at, reason, moved_from, moved_to)"
    " ON CONFLICT (stage_id, event_id) DO NOTHING"
)


async def observe_stages(
    conn: asyncpg.Connection, tenant_id: str, invoice_id: str, event_id: str, rows: Sequence[StageObservation]
) -> int:
    """Upserts each stage (the highest (rank, at, state) observation is its state) and appends the
    observation to the stage's history. Returns how many stages belong to this invoice.
    """
    if not rows:
        return 0
    cols = [list(c) for c in zip(*rows, strict=True)][:_OBSERVED]
    applied = await conn.fetch(_OBSERVE, invoice_id, tenant_id, *cols)
    mine = {r["stage_id"] for r in applied}
    hist = [r for r in rows if r.stage_id in mine]
    if hist:
        await conn.execute(
            _APPEND_HISTORY,
            event_id,
            [r.stage_id for r in hist],
            [r.state for r in hist],
            [r.rank for r in hist],
            [r.at for r in hist],
            [r.reason for r in hist],
            [r.moved_from for r in hist],
            [r.moved_to for r in hist],
        )
    return len(mine)


# The same upsert for many invoices at once: rows as one JSON document (asyncpg's per-column
# timestamp arrays are several times slower). A stage must appear at most once per statement; the
# batch handlers apply repeated observations of a stage in successive statements ("waves").
_OBSERVE_MANY = (
    _STAGE_INSERT
    + """
SELECT o.stage_id, o.invoice_id, o.tenant_id, o.stage, o.sequence, o.channel, o.scheduled_at, o.planned_at,
       o.state, o.rank, o.reason, o.at
FROM json_to_recordset($1::text::json)
     AS o(stage_id text, invoice_id text, tenant_id text, stage text, sequence int, channel text,
          scheduled_at timestamptz, planned_at timestamptz, state text, rank smallint, reason text, at timestamptz)
ORDER BY o.stage_id
"""
    + _STAGE_MERGE
)


async def observe_stages_many(conn: asyncpg.Connection, rows: Sequence[dict]) -> int:
    """rows: dicts with the keys of _OBSERVE_MANY's record, each stage_id at most once. Returns how
    many stages were applied (a stage belonging to another invoice is not)."""
    if not rows:
        return 0
    return len(await conn.fetch(_OBSERVE_MANY, orjson.dumps(rows).decode()))


_APPEND_HISTORY_MANY = (
    "INSERT INTO stage_history (stage_id, event_id, state, rank, at, reason, previous_scheduled_at, scheduled_at)"
    " SELECT h.stage_id, h.event_id, h.state, h.rank, h.at, h.reason, h.moved_from, h.moved_to"
    " FROM json_to_recordset($1::text::json)"
    "      AS h(stage_id text, event_id uuid, state text, rank smallint, at timestamptz, reason text,"
    "           moved_from timestamptz, moved_to timestamptz)"
    " ON CONFLICT (stage_id, event_id) DO NOTHING"
)


async def append_history_many(conn: asyncpg.Connection, rows: Sequence[dict]) -> None:
    """rows: dicts with stage_id, event_id, state, rank, at, reason, moved_from, moved_to."""
    if rows:
        await conn.execute(_APPEND_HISTORY_MANY, orjson.dumps(rows).decode())
