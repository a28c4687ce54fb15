"""SQL of firing: the gate (every acknowledging service's watermark) and the due timers it releases,
the watermark statements it reads, the firing loop's wake-up and gauges."""

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import orjson

from dunning.contracts import PaymentReceived, topic

# The services whose statements the gate requires (Settings.gate_sources): reconciliation states
# payments and credit notes, invoice-ingest every other stop.
GATE_SOURCES = ("reconciliation", "invoice-ingest")

# The firing query, in one place. A timer fires only if it is due, its time is at or before the
# gate's watermark, and its InvoiceIssued is below reconciliation's certified position; no
# watermark, nothing fires. The gate's watermark: for each acknowledging service in $SOURCES
# (GATE_SOURCES), its best statement among those this scheduler has caught up with (every offset
# they name applied: reconciliation's payments offsets on $1, the per-topic `offsets` of the others):
# the greatest watermark, found newest first along watermark_statements_best, so the usual case reads
# one statement per source; then the minimum over the services, and none unless every one has a
# usable statement. The certified positions are those of reconciliation's best statement (NULL:
# reconciliation is not a source, no position to wait for); any usable statement's are sound.
# A closed invoice's timer never fires: every stop cancels its timers in the statement that records
# it (repository.invoices.stop_statement), and the query checks the invoice too (void, written off,
# settled), so a timer a bug left scheduled on a closed invoice still stays silent.
# SKIP LOCKED lets replicas fire side by side, each timer once; $2 false turns the gate off (no
# reconciliation). $1 is the payments topic in both statements that start with the gate; $SOURCES
# is $4 in the firing query and $2 in gate_state's. Why this keeps the cancel guarantee:
# docs/cancel-guarantee.md#the-firing-gate and #every-stop-under-the-gate.
_GATE = """
WITH applied AS (
    SELECT topic, partition::text AS partition, next_offset FROM consumer_positions
), best AS (
    SELECT src.source, b.watermark, b.invoice_positions
    FROM (SELECT DISTINCT source FROM unnest($SOURCES::text[]) AS source) AS src
    CROSS JOIN LATERAL (
        SELECT s.watermark, s.invoice_positions FROM watermark_statements AS s
        WHERE s.source = src.source
          AND NOT EXISTS (
            SELECT 1 FROM jsonb_each_text(s.payments_offsets) AS o(partition, end_offset)
            LEFT JOIN applied AS a ON a.topic = $1 AND a.partition = o.partition
            WHERE coalesce(a.next_offset, 0) < o.end_offset::bigint)
          AND NOT EXISTS (
            SELECT 1 FROM jsonb_each(s.offsets) AS t(topic, ends)
            CROSS JOIN LATERAL jsonb_each_text(t.ends) AS o(partition, end_offset)
            LEFT JOIN applied AS a ON a.topic = t.topic AND a.partition = o.partition
            WHERE coalesce(a.next_offset, 0) < o.end_offset::bigint)
        ORDER BY s.watermark DESC, s.received_at DESC
        LIMIT 1) AS b
), gate AS (
    SELECT (SELECT CASE WHEN count(*) = (SELECT count(DISTINCT x) FROM unnest($SOURCES::text[]) AS x)
                        THEN min(watermark) END FROM best) AS watermark,
           CASE WHEN 'reconciliation' = ANY($SOURCES::text[])
                THEN coalesce((SELECT invoice_positions FROM best WHERE source = 'reconciliation'), '{}'::jsonb)
           END AS positions
)
"""
# Whether the gate lets timer `d` through: at or under the watermark, and its InvoiceIssued certified.
_PASSES_GATE = """(d.scheduled_at <= gate.watermark
                          AND (d.gate_offset IS NULL OR gate.positions IS NULL
                               OR d.gate_offset < (gate.positions ->> d.gate_partition::text)::bigint))"""
_FIRE_DUE = (
    _GATE.replace("$SOURCES", "$4")
    + """
UPDATE timers AS t SET state = 'fired', fired_at = now()
FROM invoices AS i
WHERE t.stage_id = ANY(ARRAY(
        SELECT d.stage_id FROM timers AS d, gate
        WHERE d.state = 'scheduled' AND d.scheduled_at <= now()
          -- [pauses] no timer of a paused invoice fires: a pause moves them to `paused` under these
          -- row locks, and this checks the live pauses too (a payment plan's own pause lets its
          -- instalment reminders through; a customer's hold covers its invoices); see repository.pauses
          AND NOT EXISTS (SELECT 1 FROM invoices AS x
                          WHERE x.invoice_id = d.invoice_id
                            AND (x.status <> 'open' OR x.settled
                                 OR EXISTS (SELECT 1 FROM pauses AS p
                                            WHERE p.scope = 'customer' AND p.state <> 'ended'
                                              AND p.tenant_id = x.tenant_id AND p.customer_id = x.customer_id)))
          AND NOT EXISTS (SELECT 1 FROM pauses AS p WHERE p.state <> 'ended' AND p.invoice_id = d.invoice_id
                          AND (p.cause <> 'payment_plan' OR d.kind <> 'instalment'))
          AND (NOT $2 OR {PASSES_GATE})
        ORDER BY d.scheduled_at
        LIMIT $3
        FOR UPDATE OF d SKIP LOCKED))
  AND i.invoice_id = t.invoice_id
RETURNING t.stage_id, t.tenant_id, t.invoice_id, t.stage, t.sequence, t.channel, t.template, t.scheduled_at,
          t.fired_at, i.external_id, i.number, i.currency, i.amount_due, i.balance, i.issue_date, i.due_date,
          i.payment_url, i.customer, t.context, t.kind, i.customer_id, i.policy_key, i.policy_version,
          i.policy_is_default
""".replace("{PASSES_GATE}", _PASSES_GATE)
)
# Each source's best usable watermark, as a JSON object (gate_state's and held_by_gate's `sources`).
_SOURCES = "(SELECT coalesce(jsonb_object_agg(source, watermark), '{}'::jsonb) FROM best) AS sources"
_GATE_STATE = (
    _GATE.replace("$SOURCES", "$2")
    + f"""
SELECT gate.watermark, gate.positions, {_SOURCES}
FROM gate
"""
)
# When statements are next wanted (WatermarkWanted): the earliest scheduled timer or gated deadline the
# gate's watermark does not cover yet (all of them while it has none), and the earliest timer under it
# whose InvoiceIssued reconciliation has not certified yet (only a newer statement can certify it).
# A timer the gate passes that does not fire (a held customer's) needs no newer statement: whenever it
# may fire, the gate passes it. With no timer scheduled and no gated deadline the WHERE, which names
# nothing of the gate, is a one-time filter: PostgreSQL answers no row without reading the gate.
_WANTED_FROM = (
    _GATE.replace("$SOURCES", "$2")
    + """
SELECT least(
    (SELECT min(t.scheduled_at) FROM timers AS t
     WHERE t.state = 'scheduled' AND (gate.watermark IS NULL OR t.scheduled_at > gate.watermark)),
    (SELECT min(d.scheduled_at) FROM timers AS d
     WHERE d.state = 'scheduled' AND d.scheduled_at <= gate.watermark AND NOT coalesce({PASSES_GATE}, false)),
    (SELECT min(d.at) FROM deadlines AS d
     WHERE d.gated AND (gate.watermark IS NULL OR d.at > gate.watermark)))
FROM gate
WHERE EXISTS (SELECT 1 FROM timers WHERE state = 'scheduled') OR EXISTS (SELECT 1 FROM deadlines WHERE gated)
""".replace("{PASSES_GATE}", _PASSES_GATE)
)
_ORDERED_WALK = "SET LOCAL enable_bitmapscan = off"  # until the firing transaction ends (fire_due)
PAYMENTS_TOPIC = topic(PaymentReceived)  # the catalogue's (Settings.payments_topic may name another)


async def fire_due(
    conn: asyncpg.Connection,
    limit: int,
    *,
    gated: bool = True,
    payments_topic: str = PAYMENTS_TOPIC,
    sources: Sequence[str] = GATE_SOURCES,
) -> list[asyncpg.Record]:
    """Claim up to `limit` due timers the gate lets through and mark them fired (inside the caller's
    transaction). The due timers are walked in order along timers_due and the walk stops at `limit`:
    on a large table the statistics (taken before they came due) promise a few hundred, and the
    planner's other plan, a bitmap scan, sorts every due one first, so a batch would cost the whole
    backlog (docs/bench-scale.md#the-firing-plan-at-10-million-a-backlog-is-sorted-whole)."""
    await conn.execute(_ORDERED_WALK)
    return await conn.fetch(_FIRE_DUE, payments_topic, gated, limit, list(sources))


async def gate_state(
    conn: asyncpg.Connection, payments_topic: str = PAYMENTS_TOPIC, sources: Sequence[str] = GATE_SOURCES
) -> asyncpg.Record:
    """The gate as the firing query sees it now: `watermark` (the minimum over `sources` of each one's
    best usable statement; None unless every source has one), `positions` (reconciliation's
    certified invoice positions) and `sources` (each source's best usable watermark, as text). A
    deadline at D may be judged once `watermark` >= D: every stop acknowledged before D is applied."""
    return await conn.fetchrow(_GATE_STATE, payments_topic, list(sources))


# The due timers the gate holds back (a held customer's, under the gate, are not counted: they wait for
# their hold): how many, the oldest, and the gate as it stands (the firing loop reports them).
_HELD = (
    _GATE.replace("$SOURCES", "$2")
    + """
SELECT count(*) AS held, min(d.scheduled_at) AS oldest, gate.watermark, {SOURCES}
FROM timers AS d, gate
WHERE d.state = 'scheduled' AND d.scheduled_at <= now() AND NOT coalesce({PASSES_GATE}, false)
GROUP BY gate.watermark
""".replace("{PASSES_GATE}", _PASSES_GATE).replace("{SOURCES}", _SOURCES)
)


async def held_by_gate(
    conn: asyncpg.Connection, payments_topic: str = PAYMENTS_TOPIC, sources: Sequence[str] = GATE_SOURCES
) -> asyncpg.Record | None:
    """The due timers the gate holds back now (None: none): `held`, `oldest`, `watermark` and each
    source's best usable watermark (`sources`)."""
    return await conn.fetchrow(_HELD, payments_topic, list(sources))


async def wanted_from(
    conn: asyncpg.Connection, payments_topic: str = PAYMENTS_TOPIC, sources: Sequence[str] = GATE_SOURCES
) -> datetime | None:
    """The earliest timer or gated deadline above the gate's watermark (None: there is none; with no
    timer scheduled and no gated deadline, known without reading the gate)."""
    return await conn.fetchval(_WANTED_FROM, payments_topic, list(sources))


_WAKE_FIRING = "SELECT pg_notify($1 || '_' || current_schema(), '')"
# A write that leaves a timer due within this many seconds wakes the firing loop at once (the loop
# then sleeps until that timer's time); the loop looks again on its own at least this often
# (settings.fire_poll_seconds <= it), so a timer planned due later is never found late.
WAKE_AHEAD_SECONDS = 2.0


async def wake_firing(conn: asyncpg.Connection, channel: str) -> None:
    """NOTIFY <channel>_<schema> at commit: the firing loop LISTENs there (see planner.TIMERS_CHANNEL)."""
    await conn.execute(_WAKE_FIRING, channel)


_STORE_WATERMARKS = (
    "INSERT INTO watermark_statements (statement_id, source, watermark, payments_offsets, invoice_positions,"
    " offsets, computed_at)"
    " SELECT (s->>0)::uuid, s->>1, (s->>2)::timestamptz, s->3, s->4, s->5, (s->>6)::timestamptz"
    " FROM jsonb_array_elements($1::text::jsonb) AS s ON CONFLICT (statement_id) DO NOTHING"
)


async def store_watermarks(conn: asyncpg.Connection, statements: list[tuple[str, dict]]) -> None:
    """Keep reconciliation's statements (id, PaymentsWatermark data); a redelivered one is already there."""
    await _store(
        conn,
        [
            [sid, "reconciliation", d["watermark"], d["payments_offsets"], d["invoice_positions"], {}, d["computed_at"]]
            for sid, d in statements
        ],
    )


async def store_stops_watermarks(conn: asyncpg.Connection, statements: list[tuple[str, dict]]) -> None:
    """Keep a stop-acknowledging service's statements (id, StopsWatermark data: its `service` is the
    source); a redelivered one is already there."""
    await _store(
        conn, [[sid, d["service"], d["watermark"], {}, {}, d["offsets"], d["computed_at"]] for sid, d in statements]
    )


async def _store(conn: asyncpg.Connection, rows: list[list]) -> None:
    await conn.execute(_STORE_WATERMARKS, orjson.dumps(rows).decode())


# Per source, everything but the newest 20 once older than $1 seconds.
_PRUNE_WATERMARKS = """
DELETE FROM watermark_statements WHERE statement_id IN (
    SELECT statement_id FROM (
        SELECT statement_id, received_at,
               row_number() OVER (PARTITION BY source ORDER BY received_at DESC) AS newest
        FROM watermark_statements) AS ranked
    WHERE newest > 20 AND received_at < now() - make_interval(secs => $1))
"""


async def prune_watermarks(conn: asyncpg.Connection, keep_seconds: float = 300.0) -> int:
    """Forget statements received more than keep_seconds ago, keeping each source's newest 20 whatever
    their age. A statement is only ever superseded by newer ones; a scheduler whose consumers lag by
    more than keep_seconds waits for a newer statement it has caught up with (the safe side)."""
    result = await conn.execute(_PRUNE_WATERMARKS, keep_seconds)
    return int(result.split()[-1])


_NEXT_DUE_AT = "SELECT min(scheduled_at) FROM timers WHERE state = 'scheduled'"


async def next_due_at(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval(_NEXT_DUE_AT)


_FIRING_GAUGES = (
    "SELECT (SELECT count(*) FROM timers WHERE state = 'scheduled' AND scheduled_at <= now()) AS due,"
    " (SELECT extract(epoch FROM now() - min(scheduled_at))::float8 FROM timers"
    "   WHERE state = 'scheduled' AND scheduled_at <= now()) AS oldest_due_age,"
    " (SELECT extract(epoch FROM now() - max(watermark))::float8 FROM watermark_statements"
    "   WHERE source = 'reconciliation') AS watermark_age,"
    " (SELECT coalesce(jsonb_object_agg(source, age), '{}'::jsonb) FROM ("
    "   SELECT source, extract(epoch FROM now() - max(watermark))::float8 AS age FROM watermark_statements"
    "   GROUP BY source) AS ages) AS watermark_ages"
)


async def firing_gauges(conn: asyncpg.Connection) -> asyncpg.Record:
    """For /metrics: timers due and not fired, how long the oldest has been due, the age of the newest
    payments watermark (None: none received) and of each source's newest statement (watermark_ages:
    {source: seconds}). The first two read the partial index timers_due."""
    return await conn.fetchrow(_FIRING_GAUGES)
