"""The one place where reconciliation is wired: pool, producer, HTTP app, the InvoiceIssued consumer,
the payments watermark, the outbox relay and housekeeping. Tests call the same functions."""

import asyncio

import asyncpg

from dunning import inbox
from dunning.consumer import ConsumerRunner
from dunning.logging import get_logger
from dunning.outbox import OutboxRelay
from dunning.runtime import Service, open_infrastructure

from dunning_reconciliation.api import Deps, create_app
from dunning_reconciliation.handlers import BATCH_HANDLERS, HANDLERS
from dunning_reconciliation.settings import Settings
from dunning_reconciliation.watermark import WatermarkPublisher

log = get_logger(__name__)


def consumer_for(settings: Settings, pool: asyncpg.Pool) -> ConsumerRunner:
    return ConsumerRunner.from_settings(
        settings, pool, name="reconciliation.invoices",
        topics=[settings.invoices_topic], handlers=HANDLERS, batch_handlers=BATCH_HANDLERS,
        track_positions=True)  # published in the payments watermark


def relay_for(settings: Settings, pool: asyncpg.Pool, producer) -> OutboxRelay | None:
    """The outbox relay, recording the offsets the broker acknowledged (the watermark states them)."""
    if not settings.relay_enabled:
        return None
    return OutboxRelay(pool, producer, settings.db_schema, batch_size=settings.relay_batch_size,
                       poll_seconds=settings.relay_poll_seconds, record_offsets=True)


def watermark_for(settings: Settings, pool: asyncpg.Pool, producer) -> WatermarkPublisher:
    return WatermarkPublisher(pool, producer, payments_topic=settings.payments_topic, invoices_topic=settings.invoices_topic,
                              watermarks_topic=settings.watermarks_topic,
                              interval_seconds=settings.watermark_interval_seconds)


class Housekeeping:
    """Forgets inbox ids older than the topics' retention (they can no longer be redelivered)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings):
        self.pool = pool
        self.settings = settings
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    purged = await inbox.purge(conn, self.settings.inbox_retention_days)
                if purged:
                    log.info("reconciliation.housekeeping.inbox_purged", rows=purged)
            except Exception as exc:  # noqa: BLE001 - housekeeping must not take the service down
                log.warning("reconciliation.housekeeping.failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.housekeeping_interval_seconds)
            except asyncio.TimeoutError:
                pass


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    workers = [consumer_for(settings, pool), Housekeeping(pool, settings)]
    if settings.watermark_enabled:
        workers.append(watermark_for(settings, pool, producer))
    return Service(
        name=settings.service_name,
        settings=settings,
        pool=pool,
        producer=producer,
        app=create_app(Deps(pool, settings)),
        workers=workers,
        relay=relay_for(settings, pool, producer),
    )
