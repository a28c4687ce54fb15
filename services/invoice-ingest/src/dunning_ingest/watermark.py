"""The stops watermark: how far the stops invoice-ingest acknowledged have been published.

A few times a second one replica states "every stop acknowledged at or before W (void, write-off,
hold, dispute, promise, payment plan) is on the invoices and customers topics below these offsets"
(`StopsWatermark` on `dunning.watermarks.v1`, key `_invoice-ingest`). W is the fence (the earliest
start of a transaction still acknowledging, see repository.fence) and the oldest row still waiting
in the outbox on those topics, less 1 µs; the offsets are what ingest's relay recorded as
acknowledged by the broker. The machinery is the library's (dunning.watermark); the scheduler fires a
stage only under a usable statement of every acknowledging service
(docs/cancel-guarantee.md#every-stop-under-the-gate).
"""

import asyncpg
from aiokafka import AIOKafkaProducer

from dunning import watermark
from dunning.contracts import StopsWatermark
from dunning_ingest.repository.fence import KEYS

SERVICE = "invoice-ingest"


def stops_watermark(s: watermark.Statement) -> StopsWatermark:
    return StopsWatermark(SERVICE, s.watermark, s.offsets, s.computed_at)


def stops_publisher(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    *,
    invoices_topic: str,
    customers_topic: str,
    watermarks_topic: str,
    interval_seconds: float = 0.25,
) -> watermark.WatermarkPublisher:
    """Ingest's publisher: covers the invoices and customers topics (its relay records their offsets)."""
    return watermark.WatermarkPublisher(
        pool,
        producer,
        log_prefix="ingest",
        keys=KEYS,
        topics=[invoices_topic, customers_topic],
        watermarks_topic=watermarks_topic,
        build=stops_watermark,
        interval_seconds=interval_seconds,
    )
