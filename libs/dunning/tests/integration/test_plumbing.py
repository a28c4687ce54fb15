"""The shared plumbing on a real PostgreSQL and a real Kafka-protocol broker:
outbox relay (order per key, several relays), consumer runner (inbox dedupe, retries, dead letters)."""

import asyncio
import copy
import json
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from dunning import outbox
from dunning.clock import utcnow
from dunning.consumer import ConsumerRunner
from dunning.contracts import InvoiceIssued
from dunning.db import create_pool
from dunning.dead_letters import DEAD_LETTER_TOPIC
from dunning.events import new_event, schemas_dir
from dunning.handler_table import HandlerSpec, Rejected
from dunning.ids import new_id
from dunning.outbox import OutboxRelay
from dunning_tools.testing.kafka import read_topic

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("plumbing_migrations")
INVOICES = "dunning.invoices.v1"


def invoice_issued(invoice_id: str | None = None) -> dict:
    example = json.loads((schemas_dir() / "examples/InvoiceIssued/1/eur-invoice.json").read_text())
    data = copy.deepcopy(example["data"])
    data["invoice_id"] = invoice_id or new_id("inv")
    return new_event(
        "dunning.InvoiceIssued.v1",
        data,
        source="/invoice-ingest",
        subject=data["invoice_id"],
        tenant_id=data["tenant_id"],
    )


@pytest.fixture
async def pool(infra, migrated):
    schema = migrated(MIGRATIONS)
    pool = await create_pool(infra.database_url, schema)
    yield pool
    await pool.close()


async def test_two_relays_publish_every_row_in_order_per_key(infra, pool, producer):
    keys = [new_id("inv") for _ in range(5)]
    events = {k: [invoice_issued(k) for _ in range(40)] for k in keys}
    async with pool.acquire() as conn, conn.transaction():
        for i in range(40):  # interleave keys, as concurrent requests would
            await outbox.add_many(conn, [events[k][i] for k in keys])
    schema = await pool.fetchval("SELECT current_schema()")
    relays = [OutboxRelay(pool, producer, schema, batch_size=17) for _ in range(2)]
    while await pool.fetchval("SELECT count(*) FROM outbox"):
        await asyncio.gather(*(r.publish_once() for r in relays))
    assert sum(r.published for r in relays) == 200

    wanted = {e["id"] for evs in events.values() for e in evs}
    records = await read_topic(
        infra.kafka_bootstrap_servers, INVOICES, lambda recs: wanted <= {orjson.loads(r.value)["id"] for r in recs}
    )
    partitions = sorted(await producer.partitions_for(INVOICES))
    for key in keys:
        mine = [r for r in records if r.key == key.encode()]
        assert [orjson.loads(r.value)["id"] for r in mine] == [e["id"] for e in events[key]], (
            "one invoice's events must stay in order"
        )
        # the partition a plain producer.send would choose (Kafka's murmur2), so other clients agree
        assert {r.partition for r in mine} == {DefaultPartitioner()(key.encode(), partitions, partitions)}


def _invoices_runner(infra, pool, handle, group: str, name: str = "t") -> ConsumerRunner:
    """A runner on the real broker, consuming the invoices topic in `group` with `handle`."""
    return ConsumerRunner(
        name=name,
        pool=pool,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=group,
        topics=[INVOICES],
        handlers={InvoiceIssued: HandlerSpec(handle)},
    )


async def _run(runner: ConsumerRunner, until, timeout: float = 40.0):
    task = asyncio.create_task(runner.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not await until():
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 40)


async def test_consumer_applies_each_event_once_and_dead_letters_poison(infra, pool, producer):
    calls = {"flaky": 0}

    async def handle(conn, event):
        invoice_id = event.data.invoice_id
        if event.data.metadata.get("behaviour") == "rejected":
            raise Rejected("no such customer")
        if event.data.metadata.get("behaviour") == "bug":
            raise KeyError("always broken")
        if event.data.metadata.get("behaviour") == "flaky" and calls["flaky"] == 0:
            calls["flaky"] += 1
            raise RuntimeError("transient handler error")
        await conn.execute("INSERT INTO applied (event_id, invoice_id) VALUES ($1, $2)", event.id, invoice_id)

    key = new_id("inv")  # one partition: poison must not block what follows it
    good = invoice_issued(key)
    flaky, rejected, bug, after = (invoice_issued(key) for _ in range(4))
    flaky["data"]["metadata"] = {"behaviour": "flaky"}
    rejected["data"]["metadata"] = {"behaviour": "rejected"}
    bug["data"]["metadata"] = {"behaviour": "bug"}
    invalid = invoice_issued(key)
    invalid["data"]["amount_due"] = 12.5  # a float: invalid against the schema
    for value in [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps(invalid),
        orjson.dumps(good),  # the same event again
        orjson.dumps(flaky),
        orjson.dumps(rejected),
        orjson.dumps(bug),
        orjson.dumps(after),
    ]:
        await producer.send_and_wait(INVOICES, value=value, key=key.encode())

    runner = _invoices_runner(infra, pool, handle, f"t-{uuid.uuid4().hex}")

    async def done():
        return (
            await pool.fetchval("SELECT count(*) FROM applied WHERE invoice_id = $1", key) >= 3
            and await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1 AND key = $2", DEAD_LETTER_TOPIC, key)
            >= 4
        )

    await _run(runner, done)
    applied = [
        r["event_id"]
        for r in await pool.fetch("SELECT event_id::text FROM applied WHERE invoice_id = $1 ORDER BY applied_at", key)
    ]
    assert sorted(applied) == sorted([good["id"], flaky["id"], after["id"]])
    dead = await pool.fetch(
        "SELECT headers, payload FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id", DEAD_LETTER_TOPIC, key
    )
    reasons = [d["headers"]["x-dlq-reason"] for d in dead]
    assert reasons == ["invalid", "invalid", "rejected", "handler_error"]
    assert bytes(dead[0]["payload"]) == b"{not json"
    assert dead[2]["headers"]["x-dlq-error"] == "no such customer"
    statuses = dict(
        await pool.fetch(
            "SELECT event_id::text, status FROM inbox WHERE event_id = ANY($1::uuid[])", [rejected["id"], bug["id"]]
        )
    )
    assert set(statuses.values()) == {"dead_lettered"}


async def test_infrastructure_error_retries_the_batch_and_offsets_follow_the_database(infra, pool, producer):
    """An infrastructure error rolls the whole batch back and retries it: nothing is applied twice,
    nothing is skipped, and the group's committed offsets move only once the database committed."""
    key = new_id("inv")
    events = [invoice_issued(key) for _ in range(5)]
    for e in events:
        await producer.send_and_wait(INVOICES, value=orjson.dumps(e), key=key.encode())
    group = f"t-{uuid.uuid4().hex}"
    failures = {"left": 1}

    async def handle(conn, event):
        if event.subject != key:
            return
        await conn.execute("INSERT INTO applied (event_id, invoice_id) VALUES ($1, $2)", event.id, key)
        if event.id == events[3]["id"] and failures["left"]:
            failures["left"] -= 1
            raise ConnectionResetError("database went away")  # after earlier rows were written

    async def all_applied():
        return await pool.fetchval("SELECT count(*) FROM applied WHERE invoice_id = $1", key) == 5

    runner = _invoices_runner(infra, pool, handle, group, name="a")
    await _run(runner, all_applied)
    assert failures["left"] == 0
    rows = await pool.fetch("SELECT event_id::text FROM applied WHERE invoice_id = $1", key)
    assert sorted(r["event_id"] for r in rows) == sorted(e["id"] for e in events)

    # The group's committed position is past our messages: a restarted consumer gets none of them.
    again = []

    async def record(conn, event):
        if event.subject == key:
            again.append(event.id)

    restarted = _invoices_runner(infra, pool, record, group, name="b")
    marker = invoice_issued(key)
    await producer.send_and_wait(INVOICES, value=orjson.dumps(marker), key=key.encode())
    await _run(restarted, lambda: asyncio.sleep(0.05, result=marker["id"] in again))
    assert again == [marker["id"]], "only what came after the committed offset is delivered again"


async def _members(admin: AIOKafkaAdminClient, group: str) -> list:
    [description] = await admin.describe_consumer_groups([group])
    [found] = description.groups
    error_code, group_id, state, protocol_type, protocol, members = found[:6]
    assert error_code == 0, found
    return list(members)


async def test_a_runner_stopped_in_its_groups_first_generation_leaves_the_group(infra, pool):
    """Tansu numbers a group's first generation 0 and aiokafka leaves only from 1 (dunning.group_leave):
    a runner stopped then stayed a member until its session ran out, and the next to join waited ~8 s."""
    group = f"t-{uuid.uuid4().hex}"

    async def handle(conn, event):
        return None

    runner = _invoices_runner(infra, pool, handle, group, name="leaves")
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap_servers)
    await admin.start()
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            while runner.consumer is None or not runner.consumer.assignment():
                await asyncio.sleep(0.05)
        assert runner.consumer._coordinator.generation == 0  # Tansu's first generation: the case at stake
        assert len(await _members(admin, group)) == 1
        runner.stop()
        await asyncio.wait_for(task, 30)
        assert await _members(admin, group) == []  # it left, rather than waiting out its session
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await admin.close()


async def test_a_loop_whose_listen_connection_is_lost_listens_again(infra, pool):
    """PostgreSQL drops the loop's LISTEN connection (a restart, a failover): the loop listens again on
    a new connection, and a NOTIFY after that still wakes it long before its idle interval."""
    from dunning.loops import Loop

    channel = f"t_loop_{uuid.uuid4().hex[:8]}"

    class Idle(Loop):
        async def step(self):
            return None  # idle: wait the whole interval unless woken

    async def listeners() -> list[int]:
        sql = "SELECT array_agg(pid) FROM pg_stat_activity WHERE query = $1"  # asyncpg's LISTEN, as it sends it
        return await pool.fetchval(sql, f'LISTEN "{channel}"') or []

    loop = Idle(idle_seconds=60, listen=(pool, channel))
    task = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(10):
            while not await listeners():
                await asyncio.sleep(0.05)
        [first] = await listeners()
        await pool.execute("SELECT pg_terminate_backend($1)", first)
        async with asyncio.timeout(10):
            while True:  # notified until it steps: only a loop listening again can
                steps = loop.steps
                await pool.execute("SELECT pg_notify($1, '')", channel)
                await asyncio.sleep(0.2)
                if loop.steps > steps and (await listeners()) not in ([], [first]):
                    break
    finally:
        loop.stop()
        await asyncio.wait_for(task, timeout=10)


async def test_a_consumer_dozing_after_a_quiet_spell_still_applies_the_next_event_and_wakes(infra, pool, producer):
    """The idle fetch wait is set on aiokafka's real fetcher (a private attribute: this test is what
    notices if an upgrade renames it) and the first event after the quiet spell is applied."""

    async def handle(conn, event):
        await conn.execute(
            "INSERT INTO applied (event_id, invoice_id) VALUES ($1, $2)", event.id, event.data.invoice_id
        )

    runner = _invoices_runner(infra, pool, handle, f"t-{uuid.uuid4().hex}")
    runner.idle_after_seconds = 0.5
    task = asyncio.create_task(runner.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (runner.consumer and runner.consumer._fetcher._fetch_max_wait_ms == runner.idle_fetch_wait_ms):
            assert loop.time() < deadline, "the consumer never dozed"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
        event = invoice_issued()
        await producer.send_and_wait(INVOICES, value=orjson.dumps(event), key=event["subject"].encode())
        while not await pool.fetchval("SELECT count(*) FROM applied WHERE event_id = $1::uuid", event["id"]):
            assert loop.time() < deadline + 30, "the event after the quiet spell was never applied"
            await asyncio.sleep(0.05)
        assert runner.consumer._fetcher._fetch_max_wait_ms == runner.fetch_wait_ms
    finally:
        runner.stop()
        await asyncio.wait_for(task, 40)


async def test_a_napping_consumer_is_woken_by_the_relays_hint_and_not_by_its_nap_ending(infra, pool, producer):
    """After its quiet spell the consumer pauses (dunning.naps) for up to ten minutes: the event the
    relay publishes is applied all the same, because the relay's hint (NOTIFY "records:<topic>" at its
    commit) wakes it; the partitions are resumed after every nap."""

    async def handle(conn, event):
        await conn.execute(
            "INSERT INTO applied (event_id, invoice_id) VALUES ($1, $2)", event.id, event.data.invoice_id
        )

    runner = _invoices_runner(infra, pool, handle, f"t-{uuid.uuid4().hex}")
    runner.idle_after_seconds, runner.idle_nap_seconds = 0.5, 600.0
    schema = await pool.fetchval("SELECT current_schema()")
    relay = OutboxRelay(pool, producer, schema)
    task = asyncio.create_task(runner.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (runner.naps and runner.naps.naps and runner.consumer.paused()):
            assert loop.time() < deadline, "the consumer never napped"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
        event = invoice_issued()
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_many(conn, [event])
        assert await relay.publish_once() >= 1  # (and the dead letters of older events on the topic)
        while not await pool.fetchval("SELECT count(*) FROM applied WHERE event_id = $1::uuid", event["id"]):
            assert loop.time() < deadline + 30, "the hinted event was not applied: the nap was not cut short"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
        assert runner.naps.hints >= 1
    finally:
        runner.stop()
        await asyncio.wait_for(task, 40)
    assert not runner.consumer.paused()


async def test_the_relay_and_a_gate_heartbeat_hint_their_topics(infra, pool, producer):
    from dunning.contracts import WatermarkWanted
    from dunning.naps import channel
    from dunning.watermark import send_heartbeat

    heard: list[str] = []
    got = asyncio.Event()
    conn = await pool.acquire()
    try:
        for c in (channel(INVOICES), channel("dunning.watermarks.v1")):
            await conn.add_listener(c, lambda _c, _pid, ch, _payload: (heard.append(ch), got.set()))
        async with pool.acquire() as c, c.transaction():
            await outbox.add_many(c, [invoice_issued()])
        relay = OutboxRelay(pool, producer, await pool.fetchval("SELECT current_schema()"))
        assert await relay.publish_once() == 1
        await asyncio.wait_for(got.wait(), 10)
        got.clear()
        await send_heartbeat(producer, "dunning.watermarks.v1", WatermarkWanted(None, utcnow()), hint_to=pool)
        await asyncio.wait_for(got.wait(), 10)
    finally:
        await conn.reset()  # its listeners removed
        await pool.release(conn)
    assert heard == [channel(INVOICES), channel("dunning.watermarks.v1")]
