"""Prometheus metrics, the same in every service: `instrument_app(app, service_name)` and what is registered.

Each service process has one `Metrics` (a prometheus_client registry of its own, so several services
or test apps in one process never collide), kept on `app.state.metrics`:

- `dunning_http_request_duration_seconds{method, route, status}`: a histogram by ROUTE TEMPLATE
  (`/v1/invoices/{invoice_id}`), never the raw path (unbounded label values); a request no route
  matched is labelled `UNMATCHED`. Recorded by a plain ASGI middleware.
- `GET /metrics`: the Prometheus text format (0.0.4), not in the OpenAPI schema, no API key.
- what `register_service` adds for a running service: consumer positions and lag per topic and
  partition, outbox depth and oldest row age (read at scrape time: one indexed query), relay
  published counts, and every worker's own `collect()` (prometheus_client's custom collector
  protocol). Service-specific figures read from the database register with `on_scrape`.

Counters are this process's since it started; gauges read from the database hold for every replica.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from dunning.http.tracing import route_template
from dunning.logging import get_logger

log = get_logger(__name__)

UNMATCHED = "UNMATCHED"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCRAPE_STEP_TIMEOUT = 2.0  # a figure read at scrape time that takes longer is left out of this scrape


class Metrics:
    """One service process's registry: the HTTP histogram, collectors, and refreshers run per scrape."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None):
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.http_latency = Histogram(
            "dunning_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], Any] = {}  # labels() costs a lock and a lookup per call
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._registered: set[int] = set()
        self._metrics: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.http_latency.labels(*key)
        child.observe(seconds)

    def register(self, collector: Any) -> None:
        """Add a collector (an object with `collect()`, or a prometheus_client metric); once per object."""
        if self.first_time(collector):
            self.registry.register(collector)

    def first_time(self, obj: Any) -> bool:
        """True the first time `obj` is seen here (so registering twice is harmless)."""
        if id(obj) in self._registered:
            return False
        self._registered.add(id(obj))
        return True

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh` before each scrape (it sets gauges from the database, say)."""
        self._refreshers.append(refresh)

    def gauge(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Gauge:
        """The registry's gauge of that name, created on first use (two workers may ask for it)."""
        if name not in self._metrics:
            self._metrics[name] = Gauge(name, documentation, list(labelnames), registry=self.registry)
        return self._metrics[name]

    async def exposition(self) -> bytes:
        async def _one(refresh: Callable[[], Awaitable[None]]) -> None:
            try:
                await asyncio.wait_for(refresh(), timeout=SCRAPE_STEP_TIMEOUT)
            except Exception as exc:
                log.warning(
                    "metrics.refresh.failed", refresh=getattr(refresh, "__qualname__", repr(refresh)), error=repr(exc)
                )

        await asyncio.gather(*(_one(r) for r in self._refreshers))
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Records each HTTP request's latency by route template. Plain ASGI: Starlette's router writes the
    matched route into the scope it is handed, which is this middleware's scope too."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            template = route_template(scope) or UNMATCHED  # the same template the request's span is named by
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - started)


def instrument_app(app: FastAPI, service_name: str) -> Metrics:
    """The HTTP latency middleware and `GET /metrics` on `app`; returns its `Metrics` (idempotent)."""
    existing = getattr(app.state, "metrics", None)
    if isinstance(existing, Metrics):
        return existing
    metrics = Metrics(service_name)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def prometheus_metrics(request: Request) -> Response:
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], include_in_schema=False, response_class=Response)
    return metrics


def metrics_of(app: FastAPI | None) -> Metrics | None:
    """The app's `Metrics` if `instrument_app` was called on it."""
    found = getattr(getattr(app, "state", None), "metrics", None)
    return found if isinstance(found, Metrics) else None


# --- what every service registers ------------------------------------------------------------


class ConsumerCollector:
    """Positions and lag of a ConsumerRunner, per topic and partition. Position: the next offset the
    runner has applied and committed; lag: the partition's high watermark (from the last fetch) minus
    that position."""

    def __init__(self, runner: Any):
        self.runner = runner

    def collect(self) -> Iterable[Metric]:
        labels = ["consumer", "topic", "partition"]
        position = GaugeMetricFamily("dunning_consumer_position", "Next offset applied and committed.", labels=labels)
        lag = GaugeMetricFamily("dunning_consumer_lag", "Messages on the partition not yet applied.", labels=labels)
        processed = CounterMetricFamily(
            "dunning_consumer_processed", "Messages applied by this process.", labels=["consumer"]
        )
        dead = CounterMetricFamily(
            "dunning_consumer_dead_lettered", "Messages dead-lettered by this process.", labels=["consumer"]
        )
        name = self.runner.name
        for (topic, partition), (pos, high) in sorted(self.runner.lag_snapshot().items()):
            values = [name, topic, str(partition)]
            if pos is not None:
                position.add_metric(values, pos)
            if pos is not None and high is not None:
                lag.add_metric(values, max(high - pos, 0))
        processed.add_metric([name], self.runner.processed)
        dead.add_metric([name], self.runner.dead_lettered)
        return [position, lag, processed, dead]


class RelayCollector:
    """Rows this process's outbox relay has published."""

    def __init__(self, relay: Any):
        self.relay = relay

    def collect(self) -> Iterable[Metric]:
        published = CounterMetricFamily("dunning_outbox_published", "Outbox rows published by this process.")
        published.add_metric([], self.relay.published)
        return [published]


def outbox_gauges(metrics: Metrics, pool: asyncpg.Pool) -> None:
    """Outbox depth and the age of its oldest row, read at scrape time (the oldest by its id index)."""
    depth = metrics.gauge("dunning_outbox_depth", "Rows waiting in the outbox (every replica's).")
    oldest = metrics.gauge("dunning_outbox_oldest_age_seconds", "Age of the oldest row waiting in the outbox.")

    async def refresh() -> None:
        row = await pool.fetchrow(
            "SELECT (SELECT count(*) FROM outbox) AS depth,"
            " (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1)"
            " AS oldest"
        )
        depth.set(row["depth"])
        oldest.set(row["oldest"] or 0.0)

    metrics.on_scrape(refresh)


def register_service(metrics: Metrics, *, pool: asyncpg.Pool, workers: Iterable[Any] = (), relay: Any = None) -> None:
    """What every service exposes: outbox gauges, the relay's counts, each consumer's positions and lag,
    and each worker's own metrics: its `instrument(metrics)` if it has one, else its `collect()`.
    Registering the same pool, relay or worker again changes nothing."""
    from dunning.consumer import (
        ConsumerRunner,  # imported late: the consumer module is the heavier one
    )

    if metrics.first_time(pool):
        outbox_gauges(metrics, pool)
    if relay is not None and metrics.first_time(relay):
        metrics.registry.register(RelayCollector(relay))
    for worker in workers:
        if isinstance(worker, ConsumerRunner):
            if metrics.first_time(worker):
                metrics.registry.register(ConsumerCollector(worker))
        elif callable(getattr(worker, "instrument", None)):
            worker.instrument(metrics)  # idempotent, like register()
        elif callable(getattr(worker, "collect", None)):
            metrics.register(worker)
