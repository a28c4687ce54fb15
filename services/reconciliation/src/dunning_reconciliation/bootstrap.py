"""The one place where reconciliation is wired: pool, producer, HTTP app, the invoices consumer,
the payments watermark, the outbox relay and housekeeping. Tests call the same functions."""

import asyncpg

from dunning import runtime
from dunning.consumer import ConsumerRunner
from dunning.logging import get_logger
from dunning.outbox import OutboxRelay
from dunning.runtime import Service, Worker, housekeeping_for, open_infrastructure
from dunning_reconciliation.api import Deps, create_app
from dunning_reconciliation.handlers import HANDLERS
from dunning_reconciliation.settings import Settings
from dunning_reconciliation.watermark import WatermarkPublisher

log = get_logger(__name__)


def consumer_for(settings: Settings, pool: asyncpg.Pool) -> ConsumerRunner:
    return ConsumerRunner.from_settings(
        settings, pool, name="reconciliation.invoices", handlers=HANDLERS, track_positions=True
    )  # published in the payments watermark


def relay_for(settings: Settings, pool: asyncpg.Pool, producer) -> OutboxRelay | None:
    """The outbox relay, recording the offsets the broker acknowledged (the watermark states them)."""
    return runtime.relay_for(settings, pool, producer, record_offsets=True)


def watermark_for(settings: Settings, pool: asyncpg.Pool, producer) -> WatermarkPublisher:
    return WatermarkPublisher(
        pool,
        producer,
        payments_topic=settings.payments_topic,
        invoices_topic=settings.invoices_topic,
        watermarks_topic=settings.watermarks_topic,
        interval_seconds=settings.watermark_interval_seconds,
    )


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    workers: list[Worker] = [consumer_for(settings, pool), housekeeping_for(settings, pool)]
    if settings.watermark_enabled:
        workers.append(watermark_for(settings, pool, producer))
    return Service(
        settings=settings,
        pool=pool,
        producer=producer,
        app=create_app(Deps(pool, settings)),
        workers=workers,
        relay=relay_for(settings, pool, producer),
    )
