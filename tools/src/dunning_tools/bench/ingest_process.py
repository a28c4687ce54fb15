"""invoice-ingest as a real process (`python -m dunning_ingest`: API + consumer + relay) against an
embedded PostgreSQL (fsync on, as `make bench`) and Tansu; lean load generator; CPU read from /proc.

    .venv/bin/python -m dunning_tools.bench.ingest_process [--single N] [--bulk-rounds N]

Prints, per phase, the throughput and the ingest process's CPU per request / per invoice, both
while answering and including the relay publishing the events afterwards. Nothing is asserted.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

from dunning.kafka import ensure_topics
from dunning_cli.services import migrate_all
from dunning_cli.tenants import create_tenant
from dunning_tools import loadgen
from dunning_tools.bench.measure import cpu_seconds, invoice, postgres_cpu, sys_seconds
from dunning_tools.stack.procs import free_port, spawn, stop, wait_for_port
from dunning_tools.stack.servers import broker, database


async def drained(dsn: str, timeout: float = 120) -> float:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "ingest"})
    try:
        start = time.perf_counter()
        while await conn.fetchval("SELECT count(*) FROM outbox") and time.perf_counter() - start < timeout:
            await asyncio.sleep(0.05)
        return time.perf_counter() - start
    finally:
        await conn.close()


async def phase(
    name: str,
    pid: int,
    dsn: str,
    port: int,
    requests: list[bytes],
    invoices: int,
    concurrency: int,
    pg_dir: Path | None,
):
    await drained(dsn)
    pg0 = postgres_cpu(pg_dir)
    cpu0, sys0 = cpu_seconds(pid), sys_seconds(pid)
    seconds, statuses, failures = await loadgen.run(port, requests, concurrency)
    cpu1, sys1 = cpu_seconds(pid), sys_seconds(pid)
    drain = await drained(dsn)
    cpu2, pg2 = cpu_seconds(pid), postgres_cpu(pg_dir)
    print(
        f"{name}: {invoices} invoices in {seconds:.2f}s = {invoices / seconds:,.0f}/s {statuses} "
        f"{failures[:1] if failures else ''}\n   ingest CPU answering {(cpu1 - cpu0) / invoices * 1e6:,.0f} us/invoice,"
        f" with relay {(cpu2 - cpu0) / invoices * 1e6:,.0f} us/invoice (relay drained {drain:.1f}s later;"
        f" system CPU {(sys1 - sys0) / invoices * 1e6:,.0f} us/invoice); PostgreSQL CPU with relay"
        f" {(pg2 - pg0) / invoices * 1e6:,.0f} us/invoice",
        flush=True,
    )


async def main_async(args, dsn: str, kafka: str, workdir: Path, pg_dir: Path | None) -> None:
    tenant = await create_tenant(dsn, "Bench")
    headers = {"Authorization": f"Bearer {tenant['api_key']}", "Content-Type": "application/json"}
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "INGEST_HTTP_PORT": str(port),
        "LOG_LEVEL": args.log_level,
    }
    proc = spawn([sys.executable, "-m", "dunning_ingest"], env=env, log_path=workdir / "ingest.log")
    try:
        wait_for_port(port, proc=proc, what="invoice-ingest")
        idle = cpu_seconds(proc.pid)
        await asyncio.sleep(3)
        print(f"idle CPU: {(cpu_seconds(proc.pid) - idle) / 3 * 100:.1f}% (pid {proc.pid})", flush=True)
        run = uuid.uuid4().hex[:6]
        warm = [
            loadgen.build_request("POST", "/v1/invoices", orjson.dumps(invoice("w" + run, i)), headers)
            for i in range(300)
        ]
        await loadgen.run(port, warm)
        if args.single:
            reqs = [
                loadgen.build_request("POST", "/v1/invoices", orjson.dumps(invoice(run, i)), headers)
                for i in range(args.single)
            ]
            await phase("single POST", proc.pid, dsn, port, reqs, args.single, 32, pg_dir)
        for r in range(args.bulk_rounds):
            run = uuid.uuid4().hex[:6]
            body = orjson.dumps({"invoices": [invoice(run, i) for i in range(10_000)]})
            await phase(
                f"bulk round {r}",
                proc.pid,
                dsn,
                port,
                [loadgen.build_request("POST", "/v1/invoices/bulk", body, headers)],
                10_000,
                1,
                pg_dir,
            )
        if args.profile:
            await asyncio.sleep(float(args.profile))
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=5000)
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--profile", default="", help="seconds to keep the process up after the run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ingest-proc-bench-"))
    with database(workdir, durable=True) as db, broker(workdir) as kafka:
        asyncio.run(ensure_topics(kafka))
        migrate_all(db.dsn)
        asyncio.run(main_async(args, db.dsn, kafka, workdir, db.data_dir))


if __name__ == "__main__":
    main()
