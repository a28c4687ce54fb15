"""The payments watermark covers credit notes as it covers payments (real PostgreSQL and broker): a
credit note applied in a transaction still open holds the watermark below its acknowledged_at; once a
statement's watermark passes it, its CreditNoteIssued is on the payments topic below that
statement's offsets. Mirrors tests/integration/test_cancel_guarantee.py's fence test."""

import asyncio
import uuid
from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer

from dunning.contracts import CreditNoteIssued, topic
from dunning.events import decode
from dunning.kafka import make_producer
from dunning_reconciliation import bootstrap
from dunning_reconciliation.credit_notes import credit_note_request, issue
from dunning_reconciliation.schemas import CreditNoteIn
from dunning_reconciliation.settings import Settings
from dunning_tools.testing.waits import async_wait_until

pytestmark = pytest.mark.integration


async def _async(value):
    return value


async def _offset_of(bootstrap_servers: str, credit_note_id: str) -> tuple[str, int]:
    """(partition, offset) of the credit note's CreditNoteIssued on the payments topic, read back."""
    consumer = AIOKafkaConsumer(
        topic(CreditNoteIssued),
        bootstrap_servers=bootstrap_servers,
        group_id=f"cn-watermark-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(90):  # the session's whole payments topic, read from the start
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for record in (r for records in batch.values() for r in records):
                    event = decode(record.value)
                    if isinstance(event.data, CreditNoteIssued) and event.data.credit_note_id == credit_note_id:
                        return str(record.partition), record.offset
    finally:
        await consumer.stop()


async def test_the_watermark_covers_a_credit_note_once_past_its_acknowledgement(infra, pool, schema_name, h):
    issued = h.invoice_issued(amount_due="100.00", external_id=f"ACC-{uuid.uuid4().hex[:8]}")
    await h.handle_invoice(pool, issued)
    settings = infra.settings(Settings, schema_name, relay_poll_seconds=0.05, watermark_interval_seconds=0.1)
    producer = make_producer(infra.kafka_bootstrap_servers, "cn-watermark-test")
    await producer.start()
    watermark = bootstrap.watermark_for(settings, pool, producer)
    relay = bootstrap.relay_for(settings, pool, producer)
    assert relay is not None
    tasks = [asyncio.create_task(w.run()) for w in (watermark, relay)]
    try:
        await async_wait_until(lambda: _async(watermark.published >= 1), timeout=30, what="statements flowing")
        body = CreditNoteIn(
            invoice_id=issued["subject"], reference="CN-W", amount="100.00", currency="EUR", reason="returned"
        )
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            status, view = await issue(conn, credit_note_request(h.TENANT, body))
            assert (status, view["settled"]) == (201, True)
            acknowledged_at = datetime.fromisoformat(view["acknowledged_at"])
            before = watermark.published
            # Statements keep coming, but none covers the credit note still being applied...
            await async_wait_until(lambda: _async(watermark.published >= before + 3), timeout=10, what="statements")
            assert watermark.last is not None and watermark.last["watermark"] < acknowledged_at
            await tx.commit()
        # ...and the first one past it has its CreditNoteIssued below the payments offsets it states.
        await async_wait_until(
            lambda: _async(watermark.last["watermark"] > acknowledged_at),
            timeout=10,
            what="watermark past the credit note",
        )
        statement = watermark.last
        partition, offset = await _offset_of(infra.kafka_bootstrap_servers, view["credit_note_id"])
        assert offset < statement["payments_offsets"][partition]
    finally:
        watermark.stop()
        relay.stop()
        await asyncio.wait(tasks, timeout=10)
        await producer.stop()
