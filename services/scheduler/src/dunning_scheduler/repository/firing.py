"""SQL of firing: the payments gate and the due timers it releases, the watermark statements it
reads, the firing loop's wake-up and gauges."""

from datetime import datetime

import asyncpg
import orjson

from dunning.contracts import PaymentReceived, topic

# The firing query, in one place. A timer fires only if it is due, its time is at or before the best
# watermark among the statements whose payments offsets this scheduler has applied, and its
# InvoiceIssued is below reconciliation's certified position; no usable statement, nothing fires.
# A closed invoice's timer never fires: every stop cancels its timers in the statement that records
# it (repository.invoices.stop_statement), and the query checks the invoice too (void, written off,
# settled), so a timer a bug left scheduled on a closed invoice still stays silent.
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
          AND NOT EXISTS (SELECT 1 FROM invoices AS x
                          WHERE x.invoice_id = d.invoice_id AND (x.status <> 'open' OR x.settled))
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
