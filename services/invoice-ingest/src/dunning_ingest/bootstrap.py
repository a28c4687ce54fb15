"""The one place where invoice-ingest is wired: pool, producer, API, consumer, relay (recording the
offsets the broker acknowledged), the stops watermark, housekeeping."""

import asyncpg
from fastapi import FastAPI

from dunning import runtime
from dunning.consumer import ConsumerRunner
from dunning.http import api_key_auth
from dunning.outbox import OutboxRelay
from dunning.runtime import Service, Worker, housekeeping_for, open_infrastructure
from dunning.watermark import WatermarkPublisher
from dunning_ingest.api import Deps, create_app
from dunning_ingest.handlers import HANDLERS
from dunning_ingest.idempotency import IdempotencyStore
from dunning_ingest.service import InvoiceService
from dunning_ingest.settings import Settings
from dunning_ingest.watermark import stops_publisher


def idempotency_store(settings: Settings, pool: asyncpg.Pool) -> IdempotencyStore:
    return IdempotencyStore(
        pool, ttl_hours=settings.idempotency_ttl_hours, stale_seconds=settings.idempotency_stale_seconds
    )


def build_app(settings: Settings, pool: asyncpg.Pool) -> FastAPI:
    invoices = InvoiceService(pool, idempotency_store(settings, pool))
    return create_app(Deps(settings=settings, pool=pool, invoices=invoices, auth=api_key_auth(settings, pool)))


def build_consumer(settings: Settings, pool: asyncpg.Pool, *, group_id: str | None = None) -> ConsumerRunner:
    return ConsumerRunner.from_settings(settings, pool, name="ingest-timeline", handlers=HANDLERS, group_id=group_id)


def relay_for(settings: Settings, pool: asyncpg.Pool, producer) -> OutboxRelay | None:
    """The outbox relay, recording the offsets the broker acknowledged (the stops watermark states them)."""
    return runtime.relay_for(settings, pool, producer, record_offsets=True)


def watermark_for(settings: Settings, pool: asyncpg.Pool, producer) -> WatermarkPublisher:
    return stops_publisher(
        pool,
        producer,
        invoices_topic=settings.invoices_topic,
        customers_topic=settings.customers_topic,
        watermarks_topic=settings.watermarks_topic,
        interval_seconds=settings.watermark_interval_seconds,
    )


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    # Besides the inbox: forget Idempotency-Key results after their TTL (24 h).
    housekeeping = housekeeping_for(settings, pool, [("idempotency_keys", idempotency_store(settings, pool).purge)])
    workers: list[Worker] = [build_consumer(settings, pool), housekeeping]
    if settings.watermark_enabled:
        workers.append(watermark_for(settings, pool, producer))
    return Service(
        settings=settings,
        pool=pool,
        producer=producer,
        app=build_app(settings, pool),
        workers=workers,
        relay=relay_for(settings, pool, producer),
    )
