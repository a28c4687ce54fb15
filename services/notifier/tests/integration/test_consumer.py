"""End to end inside the notifier: StageEscalated (and CustomerUpdated, and the stops) on the real
broker -> consumer -> delivery (and contacts, and stops) -> dispatcher -> real SMTP server ->
ReminderSent (ReminderCancelled) in the outbox."""

import asyncio
import uuid
from dataclasses import replace

import orjson
import pytest

from dunning.consumer import ConsumerRunner
from dunning.contracts import CustomerUpdated, StageEscalated, topic
from dunning.events import dumps, schemas_dir, validate
from dunning.handler_table import topics_of
from dunning.ids import new_id
from dunning_notifier.handlers import HANDLERS
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration
EXAMPLES = schemas_dir() / "examples"


def only_subjects(subjects: set[str]):
    """The topics are shared by every test in the session: apply only this test's invoices and
    customers (the envelope's subject)."""

    def wrap(handler):
        async def filtered(conn, event):
            if event.subject in subjects:
                await handler(conn, event)

        return filtered

    return {t: replace(spec, each=wrap(spec.each)) for t, spec in HANDLERS.items()}


async def test_stage_escalated_from_the_broker_becomes_one_email(
    infra, notifier, stage_data, stage_escalated, producer
):
    data = stage_data(stage="final", locale="ja-JP", currency="JPY", amount="158000", payment_url=None)
    envelope = stage_escalated(data)
    reemitted = stage_escalated(dict(data, stage_id=stage_data()["stage_id"]))
    planned = orjson.loads((EXAMPLES / "DunningPlanned/1/empty-plan.json").read_bytes())
    planned.update(id=str(uuid.uuid4()), subject=data["invoice_id"], tenantid=data["tenant_id"])
    planned["data"].update(invoice_id=data["invoice_id"], tenant_id=data["tenant_id"])
    validate(planned)

    for message in (planned, envelope, envelope, reemitted):  # another type, a redelivery, a re-emission
        await producer.send_and_wait(topic(StageEscalated), dumps(message), key=data["invoice_id"].encode())

    runner = ConsumerRunner(
        name="notifier.test",
        pool=notifier.pool,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=f"notifier-test-{uuid.uuid4().hex[:8]}",
        topics=[topic(StageEscalated)],
        handlers=only_subjects({data["invoice_id"]}),
    )
    consumer = asyncio.create_task(runner.run())
    try:
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT count(*) = 2 FROM inbox WHERE event_id = ANY($1::uuid[])", [envelope["id"], reemitted["id"]]
            ),
            what="both StageEscalated consumed",
        )
        async with notifier.dispatching():
            await notifier.wait_state(data["invoice_id"], "sent")
    finally:
        runner.stop()
        await asyncio.wait_for(consumer, timeout=30)

    assert runner.dead_lettered == 0
    [mail] = await notifier.mail_to(data["customer"]["email"])
    assert mail["subject"].startswith(f"最終督促：請求書 {data['invoice']['number']}（￥158,000）")  # ja-JP
    assert mail["headers"]["X-Dunning-Stage"] == "final"
    assert "オンライン決済" not in mail["text"]  # no payment link to offer
    [event] = await notifier.reported(data["invoice_id"])  # checked against its contract
    assert event["type"] == "dunning.ReminderSent.v1"
    assert event["data"]["stage_id"] == data["stage_id"]  # the first event's stage wins


def own_topics(*events) -> list[str]:
    """The topics of these events, each one the notifier's handler table subscribes to. Not all of the
    table's: the invoices and payments topics (read for webhook subscriptions) carry other tests'
    deliberately malformed messages, which a fresh consumer group would dead-letter."""
    wanted = sorted({topic(e) for e in events})
    assert set(wanted) <= set(topics_of(HANDLERS)), wanted
    return wanted


async def test_customer_updated_from_the_broker_addresses_the_next_reminder(
    infra, notifier, stage_data, stage_escalated, customer_updated, producer
):
    data = stage_data(stage="soft")
    customer_id = data["customer"]["customer_id"] = new_id("cus")
    ap = f"ap+{new_id('m')[-8:]}@example.com"
    updates = [  # the newer one first: the older, arriving after it, must change nothing
        customer_updated(customer_id=customer_id, version=3, email=ap, cc=["cfo@example.com"]),
        customer_updated(customer_id=customer_id, version=2, email="stale@example.com"),
    ]
    for message in updates:
        await producer.send_and_wait(topic(CustomerUpdated), dumps(message), key=customer_id.encode())
    stage = stage_escalated(data)
    await producer.send_and_wait(topic(StageEscalated), dumps(stage), key=data["invoice_id"].encode())

    runner = ConsumerRunner(  # subscribed as the notifier's is to the two topics this test publishes on
        name="notifier.test",
        pool=notifier.pool,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=f"notifier-test-{uuid.uuid4().hex[:8]}",
        topics=own_topics(CustomerUpdated, StageEscalated),
        handlers=only_subjects({data["invoice_id"], customer_id}),
    )
    consumer = asyncio.create_task(runner.run())
    try:
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT count(*) = 3 FROM inbox WHERE event_id = ANY($1::uuid[])",
                [updates[0]["id"], updates[1]["id"], stage["id"]],
            ),
            what="the updates and the stage consumed",
        )
        async with notifier.dispatching():
            await notifier.wait_state(data["invoice_id"], "sent")
    finally:
        runner.stop()
        await asyncio.wait_for(consumer, timeout=30)

    assert runner.dead_lettered == 0
    [mail] = await notifier.mail_for(ap)
    assert mail["X-Envelope-To"] == f"{ap}, cfo@example.com"


async def test_stops_from_the_broker_cancel_what_is_not_yet_attempted(
    infra, notifier, stage_data, stage_escalated, stop_event, producer
):
    soft = stage_data(stage="soft")
    invoice_id = soft["invoice_id"]
    firm = dict(stage_data(stage="firm"), invoice_id=invoice_id, customer=soft["customer"])
    final = dict(stage_data(stage="final"), invoice_id=invoice_id, customer=soft["customer"])
    resumed_phase = [
        stage_escalated(soft),
        stop_event("paused", invoice_id, cause="promise"),
        stop_event("resumed", invoice_id, cause="promise", reason="promise_broken"),
        stage_escalated(firm),
    ]
    stopped_phase = [stop_event("stopped", invoice_id, reason="invoice_credited"), stage_escalated(final)]

    async def consumed(messages):
        for message in messages:
            await producer.send_and_wait(topic(StageEscalated), dumps(message), key=invoice_id.encode())
        ids = [m["id"] for m in messages]
        await async_wait_until(
            lambda: notifier.pool.fetchval(
                "SELECT count(*) = $2 FROM inbox WHERE event_id = ANY($1::uuid[])", ids, len(ids)
            ),
            what="the stage events consumed",
        )

    runner = ConsumerRunner(
        name="notifier.test",
        pool=notifier.pool,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=f"notifier-test-{uuid.uuid4().hex[:8]}",
        topics=own_topics(StageEscalated),
        handlers=only_subjects({invoice_id}),
    )
    consumer = asyncio.create_task(runner.run())
    try:
        await consumed(resumed_phase)
        async with notifier.dispatching():
            await async_wait_until(
                lambda: notifier.pool.fetchval(
                    "SELECT state = 'sent' FROM deliveries WHERE invoice_id = $1 AND stage = 'firm'", invoice_id
                ),
                what="the firm reminder sent",
            )
        await consumed(stopped_phase)
    finally:
        runner.stop()
        await asyncio.wait_for(consumer, timeout=30)

    assert runner.dead_lettered == 0
    states = dict(await notifier.pool.fetch("SELECT stage, state FROM deliveries WHERE invoice_id = $1", invoice_id))
    assert states == {"soft": "cancelled", "firm": "sent", "final": "cancelled"}
    assert [m["headers"]["X-Dunning-Stage"] for m in await notifier.mail_to(soft["customer"]["email"])] == ["firm"]
    assert [(e["type"].split(".")[1], e["data"]["stage"]) for e in await notifier.reported(invoice_id)] == [
        ("ReminderCancelled", "soft"),
        ("ReminderSent", "firm"),
        ("ReminderCancelled", "final"),
    ]
