"""The one place the scheduler is wired: pool and producer, HTTP app, consumer with its handler
table, the firing loop, the replan loop, the deadline loop and the outbox relay. Tests call the same functions."""

from dataclasses import replace
from functools import partial
from inspect import signature

import asyncpg
from prometheus_client import Histogram

from dunning.consumer import ConsumerRunner
from dunning.handler_table import HandlerTable
from dunning.metrics import metrics_of
from dunning.runtime import Service, Worker, housekeeping_for, open_infrastructure, relay_for
from dunning_scheduler import metrics as scheduler_metrics
from dunning_scheduler.api import create_app
from dunning_scheduler.deadline_loop import DeadlineLoop
from dunning_scheduler.firing import FiringLoop
from dunning_scheduler.handlers import HANDLERS
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.replan_loop import ReplanLoop
from dunning_scheduler.settings import Settings
from dunning_scheduler.wants import WantsLoop


def inject(table: HandlerTable, **dependencies) -> HandlerTable:
    """The handler table with each handler's dependencies bound (a handler names what it needs as
    keyword parameters, as in cosmicpython's bootstrap)."""

    def bound(handler):
        if handler is None:
            return None
        wanted = {k: v for k, v in dependencies.items() if k in signature(handler).parameters}
        return partial(handler, **wanted) if wanted else handler

    return {t: replace(spec, each=bound(spec.each), batch=bound(spec.batch)) for t, spec in table.items()}


def handlers_for(policies: ActivePolicies, cancel_latency: Histogram | None = None) -> HandlerTable:
    """The handler table with the process's policy cache (and cancel-latency histogram) injected."""
    return inject(HANDLERS, policies=policies, cancel_latency=cancel_latency)


def consumer_for(
    settings: Settings,
    pool: asyncpg.Pool,
    policies: ActivePolicies | None = None,
    *,
    cancel_latency: Histogram | None = None,
) -> ConsumerRunner:
    # Positions: the payments gate compares the payments offsets applied with the watermark's.
    return ConsumerRunner.from_settings(
        settings,
        pool,
        name=settings.service_name,
        handlers=handlers_for(policies or ActivePolicies(), cancel_latency),
        track_positions=True,
    )


def firing_loop_for(settings: Settings, pool: asyncpg.Pool, policies: ActivePolicies | None = None) -> FiringLoop:
    return FiringLoop(
        pool,
        settings.db_schema,
        batch_size=settings.fire_batch_size,
        poll_seconds=settings.fire_poll_seconds,
        gated=settings.payments_gate,
        payments_topic=settings.payments_topic,
        sources=settings.gate_sources,
        policies=policies,  # its `config`: the tenants' settings and customer windows the firing rules read
    )


def deadline_loop_for(settings: Settings, pool: asyncpg.Pool, policies: ActivePolicies | None = None) -> DeadlineLoop:
    return DeadlineLoop(
        pool,
        policies or ActivePolicies(),
        poll_seconds=settings.deadline_poll_seconds,
        gated=settings.payments_gate,
        payments_topic=settings.payments_topic,
        sources=settings.gate_sources,
    )


def wants_loop_for(settings: Settings, pool: asyncpg.Pool, producer) -> WantsLoop:
    return WantsLoop(
        pool,
        producer,
        payments_topic=settings.payments_topic,
        sources=settings.gate_sources,
        watermarks_topic=settings.watermarks_topic,
    )


def replan_loop_for(settings: Settings, pool: asyncpg.Pool, policies: ActivePolicies | None = None) -> ReplanLoop:
    return ReplanLoop(
        pool,
        settings.db_schema,
        policies or ActivePolicies(),
        batch_size=settings.replan_batch_size,
        poll_seconds=settings.replan_poll_seconds,
    )


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    workers: list[Worker] = [housekeeping_for(settings, pool)]
    cancel_latency = scheduler_metrics.cancel_latency()
    # One per process: the consumer's, the replan and deadline loops', the API's (its `config`, the tenants'
    # settings, segment rules and customer windows with a 2-s TTL, is the one firing reads too).
    policies = ActivePolicies()
    if settings.consumer_enabled:
        workers.append(consumer_for(settings, pool, policies, cancel_latency=cancel_latency))
    if settings.firing_enabled:
        # Its counters: runtime.instrument_service, as any worker's.
        workers.append(firing_loop_for(settings, pool, policies))
        if settings.payments_gate:  # when the gate next needs statements (dunning.watermark.Wanted)
            workers.append(wants_loop_for(settings, pool, producer))
    if settings.replans_enabled:
        workers.append(replan_loop_for(settings, pool, policies))
    if settings.deadlines_enabled:
        workers.append(deadline_loop_for(settings, pool, policies))
    app = create_app(pool, settings, policies)
    metrics = metrics_of(app)
    assert metrics is not None, "service_app instruments every app"
    scheduler_metrics.instrument(metrics, pool, latency=cancel_latency)  # backlog, watermark age, latency
    return Service(
        settings=settings,
        pool=pool,
        producer=producer,
        app=app,
        workers=workers,
        relay=relay_for(settings, pool, producer),
    )
