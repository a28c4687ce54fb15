"""The whole scheduler on a real broker: InvoiceIssued on Kafka -> consumer -> timers -> firing loop
-> outbox -> relay -> StageEscalated on Kafka; and concurrent firing loops."""

import asyncio
import uuid
from collections import Counter
from datetime import timedelta

import pytest

from dunning.clock import utcnow
from dunning.db import create_pool
from dunning.events import dumps, validate
from dunning.runtime import relay_for
from dunning_scheduler.bootstrap import consumer_for, firing_loop_for
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.policy import parse_policy
from dunning_scheduler.policy_store import save_policy
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


async def test_invoice_on_kafka_becomes_stage_escalated_on_kafka(pool, settings, producer, infra, h):
    async with pool.acquire() as conn:
        await save_policy(
            conn,
            h.TENANT,
            parse_policy(
                {
                    "anchor": "issued_at",
                    "stages": [{"name": "soft", "offset": "PT3S"}, {"name": "firm", "offset": "PT4S"}],
                }
            ),
        )
    workers = [consumer_for(settings, pool), firing_loop_for(settings, pool), relay_for(settings, pool, producer)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    # Wait until the consumer has joined its group, so that the plan starts when the invoice is issued.
    warm_up = h.payment_received(h.invoice_issued()["subject"], balance="1.00", settled=False)
    await producer.send_and_wait("dunning.payments.v1", dumps(warm_up), key=warm_up["subject"].encode())

    async def joined():
        return workers[0].processed > 0

    await async_wait_until(joined, timeout=30, what="consumer joined")

    settled_event = h.invoice_issued(issued_at=utcnow())
    event = h.invoice_issued(issued_at=utcnow())
    invoice_id, settled_id = event["subject"], settled_event["subject"]
    payment = h.payment_received(settled_id, balance="0.00", settled=True)
    validate(payment)
    await producer.send_and_wait("dunning.payments.v1", dumps(payment), key=settled_id.encode())

    async def payment_applied():  # two topics: nothing orders the payment before the invoice but time
        return await pool.fetchval("SELECT settled FROM invoices WHERE invoice_id = $1", settled_id)

    await async_wait_until(payment_applied, timeout=30, what="payment applied")
    for topic, envelope in [
        ("dunning.invoices.v1", settled_event),
        ("dunning.invoices.v1", event),
        ("dunning.invoices.v1", event),
    ]:
        validate(envelope)
        await producer.send_and_wait(topic, dumps(envelope), key=envelope["subject"].encode())

    try:

        def seen(events):  # partitions are read side by side: wait for both invoices' events
            return len(
                [e for e in events if e["type"] == "dunning.StageEscalated.v1" and e["subject"] == invoice_id]
            ) >= 2 and any(e["type"] == "dunning.DunningPlanned.v1" and e["subject"] == settled_id for e in events)

        events = await h.read_topic(infra.kafka_bootstrap_servers, "dunning.stages.v1", seen, timeout=30)
    finally:
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    mine = [e for e in events if e["subject"] in (invoice_id, settled_id)]
    for envelope in mine:
        validate(envelope)
    escalated = [e for e in mine if e["type"] == "dunning.StageEscalated.v1"]
    assert sorted(e["data"]["stage"] for e in escalated) == ["firm", "soft"]
    assert {e["subject"] for e in escalated} == {invoice_id}  # the settled invoice never fires
    planned = {e["subject"]: e for e in mine if e["type"] == "dunning.DunningPlanned.v1"}
    assert {s["state"] for s in planned[settled_id]["data"]["stages"]} == {"cancelled"}
    # The invoice came twice and was planned once. The relay is at-least-once (a slow acknowledgement
    # can publish a row again): the same event id may repeat on the topic, a second plan may not.
    plans = {e["id"] for e in mine if e["type"] == "dunning.DunningPlanned.v1" and e["subject"] == invoice_id}
    assert len(plans) == 1


async def test_two_firing_loops_never_fire_a_timer_twice(pool, infra, schema, h):
    invoices = [
        h.invoice_issued(issued_at=utcnow() - timedelta(days=1), due_date=utcnow().date() + timedelta(days=5))
        for _ in range(300)
    ]
    for event in invoices:
        await h.apply(pool, event)
    await pool.execute("UPDATE timers SET scheduled_at = now() - random() * interval '1 hour'")
    total = await pool.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'")
    assert total == 1500

    second_pool = await create_pool(infra.database_url, schema)
    loops = [
        FiringLoop(pool, schema, batch_size=40, name="a", gated=False),
        FiringLoop(second_pool, schema, batch_size=40, name="b", gated=False),
    ]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:

        async def drained():
            return await pool.fetchval("SELECT count(*) FROM timers WHERE state = 'scheduled'") == 0

        await async_wait_until(drained, timeout=30, what="every timer fired")
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await second_pool.close()

    escalated = await h.outbox_events(pool, "dunning.StageEscalated.v1")
    per_stage = Counter(e["data"]["stage_id"] for e in escalated)
    assert len(per_stage) == total and set(per_stage.values()) == {1}
    assert sum(loop.fired_total for loop in loops) == total


async def test_a_customer_update_on_its_own_topic_reaches_the_scheduler(pool, settings, producer, h):
    consumer = consumer_for(settings, pool)
    assert "dunning.customers.v1" in consumer.topics  # the handler table subscribes the group
    issued = h.invoice_issued(due_date=utcnow().date() + timedelta(days=30))
    customer = {**issued["data"]["customer"], "customer_id": f"cus_{uuid.uuid4().hex[:20]}"}
    issued["data"]["customer"] = customer
    await h.apply(pool, issued)
    task = asyncio.create_task(consumer.run())
    try:
        moved = h.customer_updated(customer, version=2, timezone="Asia/Tokyo")
        await producer.send_and_wait("dunning.customers.v1", dumps(moved), key=customer["customer_id"].encode())

        async def replanned():
            return bool(await h.outbox_events(pool, "dunning.StagesRescheduled.v1", issued["subject"]))

        await async_wait_until(replanned, timeout=30, what="StagesRescheduled after CustomerUpdated")
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=30)
