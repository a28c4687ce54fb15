"""The StageEscalated batch handler (handlers.record_deliveries) ends where record_delivery ends: one
random stream of StageEscalated (copies of one (invoice, stage, channel) within a run and across
runs, redeliveries of one event, stages going in a notice, invoices stopped for good, paused and
resumed, before and amid the stream) goes through the consumer runner's fast path once with the
batch handler (one schema) and once event by event (another schema); the deliveries, the outbox and
the inbox must be the same."""

import random
from dataclasses import replace

import orjson
import pytest

from dunning.contracts import StageEscalated
from dunning.db import migrations_of
from dunning.ids import new_id
from dunning_notifier.handlers import HANDLERS, record_deliveries
from dunning_tools.testing.runner import both_ways, feed, records, runner_on

pytestmark = pytest.mark.integration

STAGES = ("soft", "firm", "final")
CHANNELS = ("email", "sms")
MIGRATIONS = migrations_of("dunning_notifier")


def stream(seed: int, stage_data, stage_escalated, stop_event) -> tuple[list[dict], list[list[dict]]]:
    """What the notifier knew before (applied one by one both ways), and the batches of the stream
    (the conftest's builders)."""
    rng = random.Random(seed)
    invoices = [new_id("inv") for _ in range(8)]
    stages = {}  # (invoice, stage, channel) -> its StageEscalated data, fired once, re-emitted later
    for invoice in invoices:
        for stage in rng.sample(STAGES, 2):
            for channel in rng.sample(CHANNELS, rng.randint(1, 2)):
                stages[invoice, stage, channel] = stage_data(invoice_id=invoice, stage=stage, channel=channel)
    keys = list(stages)

    def escalated(key) -> dict:
        data = dict(stages[key], stage_id=new_id("stg")) if rng.random() < 0.3 else stages[key]  # re-fired
        if rng.random() < 0.1:
            data = dict(data, notice_id=new_id("ntc"))
        return stage_escalated(data)

    before = [stop_event("stopped", invoices[0]), stop_event("paused", invoices[1]), escalated(keys[-1])]
    events: list[dict] = []
    for _ in range(60):
        roll = rng.random()
        if roll < 0.05:
            events.append(stop_event(rng.choice(("stopped", "paused", "resumed")), rng.choice(invoices)))
        elif roll < 0.12 and events:
            events.append(rng.choice(events))  # the same event again (a redelivery)
        else:
            events.append(escalated(rng.choice(keys)))
    batches, at = [], 0
    while at < len(events):
        size = rng.choice((1, 5, 20, 40))
        batches.append(events[at : at + size])
        at += size
    return before, batches


def counting(fn, calls: list):
    async def wrapper(conn, events):
        calls.append(len(events))
        await fn(conn, events)

    return wrapper


async def apply_all(pool, before: list[dict], batches: list[list[dict]], *, batch: bool) -> dict:
    calls: list[int] = []
    spec = HANDLERS[StageEscalated]
    table = {**HANDLERS, StageEscalated: replace(spec, batch=counting(spec.batch, calls))}
    await feed(runner_on(pool, table, batch=False, name="before"), records(before), 1)
    runner = runner_on(pool, table, batch=batch)
    offset = 0
    for events in batches:
        await feed(runner, records(events, first_offset=offset), len(events))
        offset += len(events)
    deliveries = await pool.fetch(
        "SELECT tenant_id, invoice_id, stage_id, stage, channel, template, recipient, payload, source_event_id,"
        " traceparent, customer_id, state, attempts, cancel_reason, cancel_cause_event_id,"
        " cancelled_at IS NOT NULL AS cancelled, next_attempt_at IS NOT NULL AS due"
        " FROM deliveries ORDER BY invoice_id, stage, channel"
    )
    outbox = await pool.fetch("SELECT topic, key, event_type, payload FROM outbox ORDER BY id")
    return {
        "deliveries": [dict(r) for r in deliveries],
        # as a multiset: a stop's ReminderCancelled events follow its UPDATE ... RETURNING, whose row
        # order PostgreSQL does not fix (the same either way, in any order)
        "outbox": sorted(
            ((r["topic"], r["key"], r["event_type"], _sans(orjson.loads(bytes(r["payload"]))["data"])) for r in outbox),
            key=lambda row: orjson.dumps(row, option=orjson.OPT_SORT_KEYS),
        ),
        "inbox": [tuple(r) for r in await pool.fetch("SELECT event_id::text, status FROM inbox ORDER BY event_id")],
        "dead_lettered": runner.dead_lettered,
        "batch_calls": calls,
    }


def _sans(data: dict) -> dict:
    """An event's data without what differs by construction (generated ids, the database's clock)."""
    return {k: v for k, v in data.items() if k not in ("delivery_id", "cancelled_at")}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_run_of_stage_escalated_ends_where_event_by_event_ends(
    infra, seed, stage_data, stage_escalated, stop_event
):
    before, batches = stream(seed, stage_data, stage_escalated, stop_event)

    expected, got = await both_ways(
        infra.database_url, MIGRATIONS, lambda pool, batch: apply_all(pool, before, batches, batch=batch)
    )

    for key in ("deliveries", "outbox", "inbox", "dead_lettered"):
        assert got[key] == expected[key], key
    assert expected["batch_calls"] == [] and max(got["batch_calls"]) > 1  # the batch handler took runs
    states = {d["state"] for d in got["deliveries"]}
    assert {"pending", "cancelled"} <= states  # the stream exercised both ends
    assert any(t == "dunning.ReminderCancelled.v1" for _, _, t, _ in got["outbox"])


def test_the_table_takes_stage_escalated_a_run_at_a_time():
    assert HANDLERS[StageEscalated].batch is record_deliveries  # not a webhook type: no wrapper
