"""/metrics, the same in every service (dunning.metrics), scraped from a real ASGI app over a real
PostgreSQL and broker: latency by route template, outbox depth and age, consumer positions and lag."""

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from dunning.consumer import ConsumerRunner
from dunning.contracts import InvoiceIssued
from dunning.db import create_pool
from dunning.events import schemas_dir
from dunning.handler_table import HandlerSpec
from dunning.ids import new_id
from dunning.kafka import make_producer
from dunning.metrics import UNMATCHED, instrument_app, register_service
from dunning.outbox import OutboxRelay
from dunning_tools.testing.kafka import commit_group_at_end

pytestmark = pytest.mark.integration
MIGRATIONS = Path(__file__).with_name("plumbing_migrations")
INVOICES = "dunning.invoices.v1"
SAFETY = 30.0


@pytest.fixture
async def pool(infra, migrated):
    pool = await create_pool(infra.database_url, migrated(MIGRATIONS))
    yield pool
    await pool.close()


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: str):
        return {"id": thing_id}

    return app


async def _scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def _one(samples, name: str, **labels) -> float:
    wanted = {k: str(v) for k, v in labels.items()}
    found = [v for (n, ls), v in samples.items() if n == name and wanted.items() <= dict(ls).items()]
    assert len(found) == 1, f"{name}{wanted}: {found}"
    return found[0]


async def test_latency_is_labelled_by_route_template_and_metrics_are_not_in_the_schema(pool):
    app = _app()
    instrument_app(app, "metrics-test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for path in ("/v1/things/a1", "/v1/things/b2", "/nope", "/nope/again"):
            await client.get(path)
        await client.post("/v1/things/a1")
        samples = await _scrape(client)
        schema = (await client.get("/openapi.json")).json()
    count = "dunning_http_request_duration_seconds_count"
    assert _one(samples, count, method="GET", route="/v1/things/{thing_id}", status=200) == 2
    assert _one(samples, count, method="POST", route="/v1/things/{thing_id}", status=405) == 1
    assert _one(samples, count, method="GET", route=UNMATCHED, status=404) == 2
    assert not [ls for (_, ls) in samples if ("route", "/v1/things/a1") in ls]  # never the raw path
    le = _one(
        samples,
        "dunning_http_request_duration_seconds_bucket",
        method="GET",
        route="/v1/things/{thing_id}",
        status=200,
        le="+Inf",
    )
    assert le == 2
    assert "/metrics" not in schema["paths"]
    assert instrument_app(app, "metrics-test") is app.state.metrics  # idempotent: one registry per app


async def test_outbox_depth_and_age_and_consumer_lag_show_on_the_scrape(infra, pool):
    async with pool.acquire() as conn:  # three rows waiting, the oldest written a minute ago
        await conn.executemany(
            "INSERT INTO outbox (lane, topic, key, event_id, event_type, headers, payload, created_at)"
            " VALUES (0, 'dunning.deadletter.v1', 'k', $1, 'test', '{}', '\\x7b7d', now() - make_interval(secs => $2))",
            [(uuid.uuid4(), age) for age in (60, 5, 1)],
        )
    group = f"metrics-{uuid.uuid4().hex[:8]}"
    await commit_group_at_end(infra.kafka_bootstrap_servers, group, [INVOICES])

    release, seen = asyncio.Event(), asyncio.Event()

    async def slow(conn, event):
        seen.set()
        await release.wait()

    runner = ConsumerRunner(
        name="metrics-test",
        pool=pool,
        bootstrap_servers=infra.kafka_bootstrap_servers,
        group_id=group,
        handlers={InvoiceIssued: HandlerSpec(slow)},
        topics=[INVOICES],
    )
    app = _app()
    metrics = instrument_app(app, "metrics-test")
    register_service(metrics, pool=pool, workers=[runner], relay=OutboxRelay(pool, None, "unused"))  # type: ignore[arg-type]

    producer = make_producer(infra.kafka_bootstrap_servers, "metrics-test")
    await producer.start()
    task = asyncio.create_task(runner.run())
    try:
        example = json.loads((schemas_dir() / "examples/InvoiceIssued/1/eur-invoice.json").read_text())
        invoice_id = new_id("inv")  # one key: one partition
        for _ in range(5):
            event = {
                **example,
                "id": str(uuid.uuid4()),
                "subject": invoice_id,
                "data": {**example["data"], "invoice_id": invoice_id},
            }
            meta = await producer.send_and_wait(INVOICES, orjson.dumps(event), key=invoice_id.encode())
        end = meta.offset + 1
        await asyncio.wait_for(seen.wait(), timeout=SAFETY)  # the first batch is being applied

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            busy = await _scrape(client)
            assert _one(busy, "dunning_outbox_depth") >= 3
            assert 60 <= _one(busy, "dunning_outbox_oldest_age_seconds") < 3600
            assert _one(busy, "dunning_outbox_published_total") == 0
            where = {"consumer": "metrics-test", "topic": INVOICES, "partition": meta.partition}
            position, lag = (
                _one(busy, "dunning_consumer_position", **where),
                _one(busy, "dunning_consumer_lag", **where),
            )
            assert position < end and lag >= 1  # the batch in flight (and ours) is not applied yet

            release.set()

            async def caught_up():
                while True:
                    now = await _scrape(client)
                    if _one(now, "dunning_consumer_position", **where) >= end:
                        return now
                    await asyncio.sleep(0.05)

            done = await asyncio.wait_for(caught_up(), timeout=SAFETY)
        assert _one(done, "dunning_consumer_lag", **where) == 0
        assert _one(done, "dunning_consumer_processed_total", consumer="metrics-test") >= 5
    finally:
        release.set()
        runner.stop()
        await asyncio.wait_for(task, timeout=SAFETY)
        await producer.stop()
