"""Run a service process: its HTTP API, consumer runners, outbox relay and loops, in one event loop.

SIGTERM/SIGINT drain: the HTTP server stops taking requests, consumers finish and commit the batch
in flight, loops finish their tick, the relay publishes what it holds; then clients close and the
process exits — well inside a pod's termination grace period.
"""

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from dunning.db import create_pool, migrate
from dunning.http.server import QuietServer
from dunning.kafka import make_producer
from dunning.logging import configure_logging, get_logger
from dunning.loops import Chore, Housekeeping
from dunning.metrics import instrument_app, register_service
from dunning.outbox import OutboxRelay
from dunning.settings import CommonSettings
from dunning.tracing import configure_tracing

log = get_logger(__name__)


class Worker(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Service:
    """What a service's bootstrap builds: everything the process runs."""

    settings: CommonSettings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    app: FastAPI | None = None
    workers: list[Worker] = field(default_factory=list)
    relay: OutboxRelay | None = None
    on_close: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.settings.service_name


class _Server(QuietServer):
    @contextlib.contextmanager
    def capture_signals(self):  # the runtime owns the signals, so it can drain in order
        yield


def _listening_socket(settings: CommonSettings) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.http_host, settings.http_port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def open_infrastructure(settings: CommonSettings) -> tuple[asyncpg.Pool, AIOKafkaProducer]:
    pool = await create_pool(
        settings.database_url, settings.db_schema, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    producer = make_producer(settings.kafka_bootstrap_servers, settings.service_name)
    await producer.start()
    return pool, producer


def relay_for(
    settings: CommonSettings, pool: asyncpg.Pool, producer: AIOKafkaProducer, *, record_offsets: bool = False
) -> OutboxRelay | None:
    """The service's outbox relay (None if disabled). `record_offsets`: write the offsets the broker
    acknowledged (published_offsets) with the delete; reconciliation's payments watermark states them."""
    if not settings.relay_enabled:
        return None
    return OutboxRelay(
        pool,
        producer,
        settings.db_schema,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        record_offsets=record_offsets,
    )


def housekeeping_for(
    settings: CommonSettings, pool: asyncpg.Pool, chores: list[tuple[str, Chore]] | None = None
) -> Housekeeping:
    """The housekeeping every service runs: the inbox purge, then the service's own `chores`."""
    return Housekeeping(
        pool,
        interval_seconds=settings.housekeeping_interval_seconds,
        inbox_retention_days=settings.inbox_retention_days,
        chores=chores,
    )


def instrument_service(service: Service) -> None:
    """The same /metrics in every service: the app's (instrument_app, idempotent) with the outbox
    gauges, the relay's counts, every consumer's positions and lag, and each worker's `collect()`."""
    if service.app is None:
        return
    metrics = instrument_app(service.app, service.name)
    register_service(metrics, pool=service.pool, workers=service.workers, relay=service.relay)


async def run_service(service: Service) -> None:
    settings = service.settings
    instrument_service(service)
    loop = asyncio.get_running_loop()
    server = None
    if service.app is not None:
        server = _Server(
            uvicorn.Config(
                service.app,
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
    stopping = asyncio.Event()

    def _stop(signame: str) -> None:
        if stopping.is_set():
            return
        log.info("service.draining", signal=signame)
        stopping.set()
        if server is not None:
            server.exit()
        for worker in service.workers:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig.name)

    # The relay is started apart: it stops last, so it can publish what the drain wrote.
    draining = [asyncio.create_task(w.run(), name=type(w).__name__) for w in service.workers]
    if server is not None:
        sockets = [_listening_socket(settings)] if settings.http_reuse_port else None
        draining.append(asyncio.create_task(server.serve(sockets=sockets), name="http"))
    relay = asyncio.create_task(service.relay.run(), name="OutboxRelay") if service.relay else None
    tasks = draining + ([relay] if relay else [])
    log.info("service.started", port=settings.http_port if server else None, workers=[t.get_name() for t in tasks])
    try:
        done, _ = await asyncio.wait(
            [*tasks, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            crash = task.exception() if task in tasks else None
            if crash is not None:
                log.error("service.worker.crashed", worker=task.get_name(), error=repr(crash))
                _stop("worker-crash")
                raise crash
        _stop("finished")
        await asyncio.wait_for(asyncio.gather(*draining, return_exceptions=True), timeout=20)
        if service.relay is not None and relay is not None:
            service.relay.stop()  # its drain publishes what is left, the drain's writes included
            await asyncio.wait_for(
                asyncio.gather(relay, return_exceptions=True), timeout=service.relay.drain_seconds + 5
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for close in service.on_close:
            with contextlib.suppress(Exception):
                await close()
        with contextlib.suppress(Exception):
            await service.producer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service.pool.close(), timeout=5)
        log.info("service.stopped")


S = TypeVar("S", bound=CommonSettings)


def main(settings: S, migrations_dir: Path, bootstrap: Callable[[S], Awaitable[Service]]) -> None:
    """Entry point of a service process: logs, traces, migrations, bootstrap, run."""
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otel_traces_exporter)
    migrate(settings.database_url, settings.db_schema, migrations_dir)

    async def _main() -> None:
        if settings.kafka_create_topics:
            from dunning.kafka import ensure_topics

            created = await ensure_topics(
                settings.kafka_bootstrap_servers, replication_factor=settings.kafka_replication_factor
            )
            if created:
                log.info("service.topics.created", topics=created)
        service = await bootstrap(settings)
        gc.freeze()  # what start-up built lives for the whole process: keep it out of every GC pass
        await run_service(service)

    try:
        import uvloop

        uvloop.run(_main())
    except ImportError:  # pragma: no cover
        asyncio.run(_main())
