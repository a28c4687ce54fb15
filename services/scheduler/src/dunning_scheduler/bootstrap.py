"""The one place the scheduler is wired: pool and producer, HTTP app, consumer with its handler
table, the firing loop and the outbox relay. Tests call the same functions."""

from functools import partial
from inspect import signature

import asyncpg
from dunning.consumer import ConsumerRunner
from dunning.metrics import metrics_of
from dunning.runtime import Service, housekeeping_for, open_infrastructure, relay_for

from dunning_scheduler import metrics as scheduler_metrics
from dunning_scheduler.api import create_app
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.handlers import BATCH_HANDLERS, HANDLERS, INBOXLESS
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.settings import Settings

def inject(table: dict, **dependencies) -> dict:
    """The handler table with each handler's dependencies bound (a handler names what it needs as
    keyword parameters, as in cosmicpython's bootstrap)."""
    def bound(handler):
        wanted = {k: v for k, v in dependencies.items() if k in signature(handler).parameters}
        return partial(handler, **wanted) if wanted else handler
    return {event_type: bound(handler) for event_type, handler in table.items()}


def handlers_for(policies: ActivePolicies) -> tuple[dict, dict]:
    """(per-event, batch) handler tables with the process's policy cache injected."""
    return inject(HANDLERS, policies=policies), inject(BATCH_HANDLERS, policies=policies)


def consumer_for(settings: Settings, pool: asyncpg.Pool, policies: ActivePolicies | None = None) -> ConsumerRunner:
    handlers, batch_handlers = handlers_for(policies or ActivePolicies())
    # Positions: the payments gate compares the payments offsets applied with the watermark's.
    return ConsumerRunner.from_settings(
        settings, pool, name=settings.service_name,
        topics=[settings.invoices_topic, settings.payments_topic, settings.watermarks_topic], handlers=handlers, batch_handlers=batch_handlers, track_positions=True,
        inboxless_types=INBOXLESS)


def firing_loop_for(settings: Settings, pool: asyncpg.Pool) -> FiringLoop:
    return FiringLoop(pool, settings.db_schema, batch_size=settings.fire_batch_size,
                      poll_seconds=settings.fire_poll_seconds, gated=settings.payments_gate, payments_topic=settings.payments_topic)


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    workers = [housekeeping_for(settings, pool)]
    if settings.consumer_enabled:
        workers.append(consumer_for(settings, pool))
    firing = firing_loop_for(settings, pool) if settings.firing_enabled else None
    if firing is not None:
        workers.append(firing)
    app = create_app(pool, settings, firing=firing)
    scheduler_metrics.instrument(metrics_of(app), pool)  # timer backlog, watermark age
    return Service(name=settings.service_name, settings=settings, pool=pool, producer=producer, app=app,
                   workers=workers, relay=relay_for(settings, pool, producer))
