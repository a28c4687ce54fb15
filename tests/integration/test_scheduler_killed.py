"""A scheduler killed mid-batch loses nothing and fires nothing twice.

Two real scheduler processes (`python -m dunning_scheduler`, firing and relaying only) share one
schema of 5,000 due timers on the real PostgreSQL and the real broker. One is SIGKILLed while the
timers are being fired, the other is SIGKILLed a little later, while some are still due; then both
are started again. When every timer is fired and the outbox is empty, dunning.stages.v1 is read from
the beginning:

- every seeded stage was published (none lost with a killed batch or a killed relay);
- every timer row is fired, once (one fired_at, and one StageEscalated event id per stage on the
  topic: a timer fired twice would have been given two events with two ids);
- duplicates on the topic are only the outbox relay's at-least-once republishing (the same event,
  same id, sent again because the relay died after the broker had it and before its delete
  committed), which the notifier drops on its unique (invoice, stage, channel): at most one extra
  copy of a stage per kill, and at most one relay claim's worth per kill.

The kills must have hit work in progress: some timers fired before each kill and some after.
"""

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from dunning.db import migrate, migrations_of
from dunning.events import decode
from dunning_tools.stack.procs import free_port
from dunning_tools.stack.service import ServiceProc, service_env

pytestmark = pytest.mark.integration

# Its events land on the session's shared stages topic, which other tests' consumers read from the
# start: enough to kill mid-work many times over, not a flood.
TIMERS = 5_000  # 1,000 invoices x 5 stages
BATCH = 125  # timers fired per transaction: 40 batches
RELAY_BATCH = 500  # outbox rows one relay claims, publishes and deletes per transaction
STAGES_TOPIC = "dunning.stages.v1"
STAGE_ESCALATED = "dunning.StageEscalated.v1"

_SEED_INVOICES = """
INSERT INTO invoices (invoice_id, tenant_id, external_id, number, currency, amount_due, balance, issue_date,
                      due_date, payment_url, customer, issued_at, policy_id, policy_version, planned_at)
SELECT $2 || lpad(i::text, 8, '0'), $1, 'ext-' || i, 'INV-' || i, 'EUR', 1250.00, 1250.00,
       current_date - 20, current_date - 10, 'https://pay.example.com/i/' || i,
       '{"customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V", "external_id": "c-1", "name": "Brandt GmbH",
         "email": "ap@example.com", "locale": "de-DE", "timezone": "Europe/Berlin"}'::jsonb,
       now() - interval '20 days', 'pol_default', 1, now()
FROM generate_series(1, $3) AS i
"""
_SEED_TIMERS = """
INSERT INTO timers (stage_id, tenant_id, invoice_id, stage, sequence, channel, template, scheduled_at, state,
                    policy_version)
SELECT $3 || lpad(i::text, 8, '0') || s, $1, $2 || lpad(i::text, 8, '0'),
       (ARRAY['pre_due', 'soft', 'firm', 'final', 'collections'])[s + 1], s, 'email',
       (ARRAY['pre_due', 'soft', 'firm', 'final', 'collections'])[s + 1],
       now() - random() * interval '1 hour', 'scheduled', 1
FROM generate_series(1, $4) AS i, generate_series(0, 4) AS s
"""
# One statement per acknowledging service covering every seeded timer (gate_offset NULL: gated by
# the watermark only), with no offsets to wait for.
_WATERMARK = (
    "INSERT INTO watermark_statements (statement_id, source, watermark, computed_at)"
    " SELECT gen_random_uuid(), source, now() + interval '1 hour', now()"
    " FROM unnest(ARRAY['reconciliation', 'invoice-ingest']) AS source"
)


@dataclass
class Progress:
    fired: int
    scheduled: int
    outbox: int


async def _progress(conn, tenant: str) -> Progress:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'fired') AS fired,"
        "       count(*) FILTER (WHERE state = 'scheduled') AS scheduled,"
        "       (SELECT count(*) FROM outbox) AS outbox"
        " FROM timers WHERE tenant_id = $1",
        tenant,
    )
    return Progress(row["fired"], row["scheduled"], row["outbox"])


async def _wait_fired(conn, tenant: str, at_least: int, deadline: float, what: str) -> Progress:
    """Poll (tightly: the kills must land while firing is going on) until `at_least` are fired."""
    while time.monotonic() < deadline:
        p = await _progress(conn, tenant)
        if p.fired >= at_least:
            return p
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what} ({at_least} fired)")


async def _wait_no_backends(conn, schema: str, deadline: float) -> None:
    while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", schema):
        assert time.monotonic() < deadline, "the killed schedulers' backends are still there"
        await asyncio.sleep(0.05)


async def _read_stages(bootstrap: str) -> list[tuple[str, str]]:
    """Every StageEscalated on the topic up to its end: (stage_id, event id) per message.

    The end is the high watermark of the fetch responses, not ListOffsets: the embedded Tansu
    (0.6.0) answers ListOffsets(latest) with the last produce batch's base offset + 1, so a reader
    stopping there misses the rest of each partition's last batch. Every message of this test was
    acknowledged before the reader started, so the high watermarks it sees cover them all."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # load metadata
        partitions = [TopicPartition(STAGES_TOPIC, p) for p in sorted(consumer.partitions_for_topic(STAGES_TOPIC))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30

        async def behind() -> list[TopicPartition]:
            return [
                tp
                for tp in partitions
                if consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)
            ]

        while await behind():
            assert time.monotonic() < deadline, "timed out reading dunning.stages.v1 to its end"
            batch = await consumer.getmany(*partitions, timeout_ms=200, max_records=5000)
            for records in batch.values():
                for r in records:
                    envelope = orjson.loads(r.value)
                    if envelope.get("type") == STAGE_ESCALATED:
                        found.append((envelope["data"]["stage_id"], envelope["id"], r.value))
        return found
    finally:
        await consumer.stop()


async def test_scheduler_killed_mid_batch_loses_nothing_and_fires_nothing_twice(infra):
    run = uuid.uuid4().hex[:10]
    schema, tenant = f"k_{run}", f"ten_kill{run}"
    # ids valid against the schemas (other consumers of the shared stages topic read these events)
    invoice_prefix, stage_prefix = f"inv_K{run}", f"stg_K{run}"
    migrate(infra.database_url, schema, migrations_of("dunning_scheduler"))
    # The services' connections carry application_name=<schema>; this one does not, so the test can
    # tell when a killed process's backends are gone.
    conn = await asyncpg.connect(
        infra.database_url, server_settings={"search_path": schema, "application_name": f"{schema}-test"}
    )
    schedulers: list[ServiceProc] = []
    try:
        async with conn.transaction():
            await conn.execute(_SEED_INVOICES, tenant, invoice_prefix, TIMERS // 5)
            await conn.execute(_SEED_TIMERS, tenant, invoice_prefix, stage_prefix, TIMERS // 5)
        await conn.execute("ANALYZE timers")
        seeded = {r["stage_id"] for r in await conn.fetch("SELECT stage_id FROM timers")}
        assert len(seeded) == TIMERS

        for name in ("a", "b"):
            port = free_port()
            env = service_env(
                "SCHEDULER_",
                infra.database_url,
                infra.kafka_bootstrap_servers,
                port,
                db_schema=schema,
                consumer_enabled="false",  # fire and relay only
                fire_batch_size=BATCH,
                relay_batch_size=RELAY_BATCH,
                relay_poll_seconds=0.05,
            )
            schedulers.append(
                ServiceProc(name, "dunning_scheduler", port, env, infra.workdir / f"scheduler-killed-{run}-{name}.log")
            )
        a, b = schedulers
        deadline = time.monotonic() + 60
        for s in schedulers:
            s.start()
        for s in schedulers:
            await s.wait_ready_async(deadline - time.monotonic())
        assert (await _progress(conn, tenant)).fired == 0  # no statement yet: the gate holds everything

        # The statement opens the gate; both replicas fire side by side (SKIP LOCKED).
        await conn.execute(_WATERMARK)
        await conn.execute(f"SELECT pg_notify('scheduler_timers_{schema}', '')")

        # Kill a while firing is under way.
        await _wait_fired(conn, tenant, TIMERS // 10, deadline, "firing under way")
        assert a.kill(), f"a was not running:\n{a.tail()}"  # SIGKILL: no drain, no relay flush
        after_a = await _progress(conn, tenant)
        # Kill b too, after it has fired some more alone, while timers are still due.
        await _wait_fired(conn, tenant, after_a.fired + BATCH, deadline, "b firing alone")
        assert b.kill(), f"b was not running:\n{b.tail()}"
        # A backend whose client died finishes the statement in hand (a COMMIT already sent still
        # commits) and exits: once none is left, the figures are final until the restart.
        await _wait_no_backends(conn, schema, deadline)
        after_b = await _progress(conn, tenant)
        # The kills hit work in progress: some fired before each, and some were still due after both.
        assert 0 < after_a.fired < after_b.fired < TIMERS, (after_a, after_b)

        for s in schedulers:
            s.start()
        deadline = time.monotonic() + 60
        while True:
            final = await _progress(conn, tenant)
            if final.fired == TIMERS and final.outbox == 0:
                break
            assert time.monotonic() < deadline, f"not done: {final}\n--- a:\n{a.tail()}\n--- b:\n{b.tail()}"
            await asyncio.sleep(0.1)

        # The database: every timer fired exactly once, with its time, nothing left behind.
        rows = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'fired' AND fired_at IS NOT NULL) AS fired,"
            " count(DISTINCT stage_id) AS distinct_ids FROM timers"
        )
        assert (rows["n"], rows["fired"], rows["distinct_ids"]) == (TIMERS, TIMERS, TIMERS)
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0

        # The topic: every stage published, one event id per stage; copies only of the same event.
        events: dict[str, set[str]] = defaultdict(set)
        copies: dict[str, int] = defaultdict(int)
        for stage_id, event_id, value in await _read_stages(infra.kafka_bootstrap_servers):
            if stage_id.startswith(stage_prefix):
                if not events:  # valid against the contract: every consumer of the topic reads them
                    decode(value)
                events[stage_id].add(event_id)
                copies[stage_id] += 1
        lost = seeded - events.keys()
        assert not lost, f"{len(lost)} stages never published, e.g. {sorted(lost)[:5]}"
        assert events.keys() == seeded
        fired_twice = {sid: ids for sid, ids in events.items() if len(ids) > 1}
        assert not fired_twice, (
            f"{len(fired_twice)} stages escalated under two event ids: {list(fired_twice.items())[:3]}"
        )
        # Copies come only from a killed relay's claim (published, not yet deleted when it died):
        # at most one claim per kill, so at most one extra copy of a stage per kill.
        kills = a.kills + b.kills
        published = sum(copies.values())
        duplicates = published - TIMERS
        assert max(copies.values()) <= 1 + kills, max(copies.values())
        assert duplicates <= kills * RELAY_BATCH, duplicates
        print(
            f"\nkilled a at {after_a.fired}/{TIMERS} fired (outbox {after_a.outbox}),"
            f" b at {after_b.fired}/{TIMERS} fired (outbox {after_b.outbox});"
            f" {published} StageEscalated published for {TIMERS} stages:"
            f" {duplicates} relay duplicates (same event id) over {sum(1 for n in copies.values() if n > 1)} stages"
        )
    finally:
        for s in schedulers:
            s.stop()
        await conn.close()
