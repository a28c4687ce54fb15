"""The service as bootstrap wires it, against the real broker: an InvoiceIssued consumed from Kafka
settles a payment that arrived first, and the relay publishes PaymentReceived."""

import asyncio
import contextlib
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from dunning.events import decode, dumps
from dunning.kafka import make_producer
from dunning_reconciliation.bootstrap import bootstrap
from dunning_reconciliation.settings import Settings

pytestmark = pytest.mark.integration


async def test_invoice_from_kafka_settles_an_early_payment_and_publishes(infra, pool, schema_name, h):
    settings = infra.settings(Settings, schema_name, relay_poll_seconds=0.05, db_pool_min=1, db_pool_max=4)
    service = await bootstrap(settings)
    tasks = [asyncio.create_task(w.run()) for w in [*service.workers, service.relay]]
    listener = AIOKafkaConsumer(
        "dunning.payments.v1",
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=f"reconciliation-test-listener-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await listener.start()
    producer = make_producer(infra.kafka_bootstrap_servers, "reconciliation-test")
    await producer.start()
    try:
        issued = h.invoice_issued(currency="JPY", amount_due="158000", external_id="INV-2026-1107-003")
        invoice_id = issued["subject"]
        body = h.stripe_event(
            "payment_intent.succeeded", h.payment_intent({"invoice_external_id": "INV-2026-1107-003"}, 158000, "jpy")
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as client:
            early = await h.post_webhook(client, body)
        assert early.json()["status"] == "pending_match"

        await producer.send_and_wait("dunning.invoices.v1", dumps(issued), key=invoice_id.encode())

        received = None
        async with asyncio.timeout(30):
            while received is None:
                batch = await listener.getmany(timeout_ms=200)
                for record in (r for records in batch.values() for r in records):
                    if record.key == invoice_id.encode():
                        received = decode(record.value)  # validates against the contract
        assert received.type == "dunning.PaymentReceived.v1"
        payment = received.data.to_data()
        assert (payment["amount"], payment["balance_remaining"], payment["settled"]) == ("158000", "0", True)
    finally:
        for worker in service.workers:
            worker.stop()
        service.relay.stop()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await listener.stop()
            await producer.stop()
        await service.producer.stop()
        await service.pool.close()
