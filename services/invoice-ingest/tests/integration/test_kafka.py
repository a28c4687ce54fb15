"""invoice-ingest on the real broker: InvoiceIssued leaves through the outbox relay, and the real
consumer runner applies stage events to the timeline."""

import asyncio
import uuid

import orjson
import pytest

from dunning.events import dumps, validate
from dunning.runtime import relay_for
from dunning_ingest.bootstrap import build_consumer
from dunning_tools.testing.kafka import read_topic
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


async def find_on_topic(bootstrap: str, topic: str, invoice_id: str, timeout: float = 30.0) -> dict:
    key = invoice_id.encode()
    records = await read_topic(bootstrap, topic, lambda rs: any(r.key == key for r in rs), timeout)
    record = next((r for r in records if r.key == key), None)
    assert record is not None, f"{invoice_id} not found on {topic}"
    return {"value": orjson.loads(record.value), "headers": dict(record.headers)}


async def test_invoice_issued_reaches_kafka_after_the_relay_runs(client, pool, settings, infra, kit, producer):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    relay = relay_for(settings, pool, producer)
    assert await relay.publish_once() == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0

    found = await find_on_topic(infra.kafka_bootstrap_servers, "dunning.invoices.v1", invoice["id"])
    validate(found["value"])
    assert found["value"]["type"] == "dunning.InvoiceIssued.v1"
    assert found["value"]["data"]["external_id"] == invoice["external_id"]


async def test_the_consumer_runner_applies_stage_events_from_the_broker(client, pool, settings, infra, kit, producer):
    invoice = (await client.post("/v1/invoices", json=kit.invoice_payload())).json()
    plan = kit.event_like("DunningPlanned", "eur-five-stages.json", tenant_id=kit.TENANT, invoice_id=invoice["id"])
    stage = plan["data"]["stages"][0]
    sent = kit.event_like(
        "ReminderSent",
        "eur-soft-email.json",
        tenant_id=kit.TENANT,
        invoice_id=invoice["id"],
        stage_id=stage["stage_id"],
        stage=stage["stage"],
        channel=stage["channel"],
    )
    # the reminder first: the timeline must still converge
    await producer.send_and_wait("dunning.deliveries.v1", dumps(sent), key=invoice["id"].encode())
    await producer.send_and_wait("dunning.stages.v1", dumps(plan), key=invoice["id"].encode())

    runner = build_consumer(settings, pool, group_id=f"ingest-test-{uuid.uuid4().hex[:8]}")
    task = asyncio.create_task(runner.run())
    try:

        async def converged():
            timeline = (await client.get(f"/v1/invoices/{invoice['id']}")).json()["timeline"]
            return timeline if len(timeline) == len(plan["data"]["stages"]) and timeline[0]["state"] == "sent" else None

        timeline = await async_wait_until(converged, timeout=45, what="timeline from the broker")
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=20)
    assert timeline[0]["stage_id"] == stage["stage_id"]
    assert [s["sequence"] for s in timeline] == sorted(s["sequence"] for s in plan["data"]["stages"])
