"""The one place where invoice-ingest is wired: pool, producer, API, consumer, relay, housekeeping."""

import asyncpg
from fastapi import FastAPI

from dunning.consumer import ConsumerRunner
from dunning.http import api_key_auth
from dunning.runtime import Service, housekeeping_for, open_infrastructure, relay_for
from dunning_ingest.api import Deps, create_app
from dunning_ingest.handlers import HANDLERS
from dunning_ingest.idempotency import IdempotencyStore
from dunning_ingest.service import InvoiceService
from dunning_ingest.settings import Settings


def idempotency_store(settings: Settings, pool: asyncpg.Pool) -> IdempotencyStore:
    return IdempotencyStore(
        pool, ttl_hours=settings.idempotency_ttl_hours, stale_seconds=settings.idempotency_stale_seconds
    )


def build_app(settings: Settings, pool: asyncpg.Pool) -> FastAPI:
    invoices = InvoiceService(pool, idempotency_store(settings, pool))
    return create_app(Deps(settings=settings, pool=pool, invoices=invoices, auth=api_key_auth(settings, pool)))


def build_consumer(settings: Settings, pool: asyncpg.Pool, *, group_id: str | None = None) -> ConsumerRunner:
    return ConsumerRunner.from_settings(settings, pool, name="ingest-timeline", handlers=HANDLERS, group_id=group_id)


async def bootstrap(settings: Settings) -> Service:
    pool, producer = await open_infrastructure(settings)
    # Besides the inbox: forget Idempotency-Key results after their TTL (24 h).
    housekeeping = housekeeping_for(settings, pool, [("idempotency_keys", idempotency_store(settings, pool).purge)])
    return Service(
        settings=settings,
        pool=pool,
        producer=producer,
        app=build_app(settings, pool),
        workers=[build_consumer(settings, pool), housekeeping],
        relay=relay_for(settings, pool, producer),
    )
