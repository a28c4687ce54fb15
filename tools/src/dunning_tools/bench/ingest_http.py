"""Throughput of invoice-ingest on this machine (not a test: nothing here asserts timings).

    .venv/bin/python -m dunning_tools.bench.ingest_http [--durable] [--single N] [--bulk N]

Starts an embedded PostgreSQL (or uses DATABASE_URL), migrates a fresh schema, and measures:
- bulk: POST /v1/invoices/bulk with 10,000 new invoices per request, in-process (httpx ASGITransport);
- single: POST /v1/invoices from C concurrent clients against uvicorn in a child process.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

from dunning import tenancy
from dunning.db import create_pool, migrate, migrations_of
from dunning_tools.bench.measure import cpu_seconds
from dunning_tools.stack.procs import free_port, wait_for_port
from dunning_tools.stack.servers import database

MIGRATIONS = migrations_of("dunning_ingest")
API_KEY = "dk_bench_0123456789abcdef"
JSON = {"content-type": "application/json"}


def item(i: int, run: str) -> dict:
    return {
        "external_id": f"{run}-{i}",
        "number": f"INV-{i}",
        "customer": {
            "external_id": f"cus-{i % 500}",
            "name": f"Customer {i % 500}",
            "email": f"ap{i % 500}@example.com",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
        },
        "currency": "EUR",
        "amount_due": f"{1000 + i % 997}.{i % 100:02d}",
        "issue_date": "2026-11-02",
        "due_date": "2026-11-16",
        "payment_url": f"https://pay.example.com/i/{i}",
        "metadata": {"po": str(i)},
    }


async def bench_bulk(dsn: str, schema: str, rounds: int, size: int) -> None:
    from dunning_ingest.bootstrap import build_app
    from dunning_ingest.settings import Settings

    pool = await create_pool(dsn, schema, max_size=4)
    app = build_app(Settings(DATABASE_URL=dsn, db_schema=schema), pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench",
        timeout=120,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        for r in range(rounds):
            run = uuid.uuid4().hex[:8]
            body = {"invoices": [item(i, run) for i in range(size)]}
            content = orjson.dumps(body)
            started, cpu = time.perf_counter(), time.process_time()
            resp = await client.post("/v1/invoices/bulk", content=content, headers=JSON)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            summary = resp.json()["summary"]
            print(
                f"bulk round {r}: {size} items in {elapsed:.3f}s (API process CPU {cpu:.3f}s) = "
                f"{size / elapsed:,.0f} invoices/s {summary}"
            )
        # the nightly re-sync: everything already exists
        started = time.perf_counter()
        resp = await client.post("/v1/invoices/bulk", content=orjson.dumps(body), headers=JSON)
        elapsed = time.perf_counter() - started
        print(f"bulk re-sync (all existing): {size / elapsed:,.0f} invoices/s {resp.json()['summary']}")
    await pool.close()


async def _client(port: int, requests: list[bytes], statuses: dict[int, int]) -> None:
    """A minimal keep-alive HTTP/1.1 client (httpx costs more CPU per request than the API does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _post(i: int, run: str) -> bytes:
    body = orjson.dumps(item(i, run))
    return (
        b"POST /v1/invoices HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def bench_single(port: int, total: int, concurrency: int, server_pid: int) -> None:
    run = uuid.uuid4().hex[:8]
    statuses: dict[int, int] = {}
    await asyncio.gather(*[_client(port, [_post(-1 - c, run)], statuses) for c in range(concurrency)])  # warm-up
    requests = [_post(i, run) for i in range(total)]
    statuses.clear()
    started, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    await asyncio.gather(*[_client(port, requests[c::concurrency], statuses) for c in range(concurrency)])
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
    print(
        f"single POST: {total} requests, {concurrency} concurrent connections, {elapsed:.2f}s = "
        f"{total / elapsed:,.0f} req/s {statuses}; API process CPU {server_cpu / total * 1000:.2f} ms/request, "
        f"load generator CPU {client_cpu / total * 1000:.2f} ms/request"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--durable", action="store_true", help="fsync on (default: off, like the test stack)")
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--bulk-size", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with database(Path(tempfile.mkdtemp(prefix="ingest-bench-")), durable=args.durable) as db:
        run(db.dsn, args)


def run(dsn: str, args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)

    async def provision():
        pool = await create_pool(dsn, schema, min_size=1, max_size=1)
        async with pool.acquire() as conn:
            await tenancy.provision(conn, "ten_bench", "Bench", API_KEY)
        await pool.close()

    asyncio.run(provision())
    server = None
    try:
        if args.bulk_rounds:
            asyncio.run(bench_bulk(dsn, schema, args.bulk_rounds, args.bulk_size))
        if args.single:
            port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": dsn,
                "INGEST_DB_SCHEMA": schema,
                "INGEST_HTTP_PORT": str(port),
                "LOG_LEVEL": "WARNING",
            }
            server = subprocess.Popen([sys.executable, "-m", "dunning_tools.bench.serve_ingest_api"], env=env)
            wait_for_port(port, proc=server, what="invoice-ingest API")
            asyncio.run(bench_single(port, args.single, args.concurrency, server.pid))
    finally:
        if server:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
