"""Throughput of the dispatcher: reminders delivered per second to a local SMTP server.

    python -m dunning_tools.bench.notifier [--count 3000] [--concurrency 20]

Starts what it needs (embedded PostgreSQL unless DATABASE_URL is set, the dev mail server on a free
port), records `count` pending e-mail deliveries in a scratch schema, then runs one dispatcher until
all are sent and ReminderSent is in the outbox. Measures claim -> render -> SMTP -> record, which is
the notifier's own work (the consumer only inserts rows).
"""

import argparse
import asyncio
import cProfile
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from dunning.db import create_pool, migrate, migrations_of
from dunning.ids import new_id
from dunning.logging import configure_logging
from dunning_notifier import delivery_inserts as repo
from dunning_notifier.bootstrap import build_dispatcher
from dunning_notifier.settings import Settings
from dunning_tools.bench.measure import cpu_seconds
from dunning_tools.stack import mailserver
from dunning_tools.stack.procs import free_port, spawn, stop, wait_for_port
from dunning_tools.stack.servers import database

MIGRATIONS = migrations_of("dunning_notifier")
LOCALES = [
    ("de-DE", "EUR", "1250.00"),
    ("ja-JP", "JPY", "158000"),
    ("en-US", "USD", "980.50"),
    ("fr-FR", "EUR", "42.00"),
]
STAGES = ["pre_due", "soft", "firm", "final", "collections"]


def payload(tenant_id: str, i: int) -> dict:
    locale, currency, amount = LOCALES[i % len(LOCALES)]
    return {
        "stage_id": new_id("stg"),
        "invoice_id": new_id("inv"),
        "tenant_id": tenant_id,
        "stage": STAGES[i % len(STAGES)],
        "sequence": 1,
        "channel": "email",
        "template": STAGES[i % len(STAGES)],
        "scheduled_at": "2026-11-23T08:00:00Z",
        "fired_at": "2026-11-23T08:00:01.204Z",
        "invoice": {
            "external_id": f"ext-{i}",
            "number": f"INV-{i:06d}",
            "currency": currency,
            "amount_due": amount,
            "balance": amount,
            "issue_date": "2026-11-02",
            "due_date": "2026-11-16",
            "payment_url": random.choice([None, f"https://pay.example.com/i/{i}"]),
        },
        "customer": {
            "customer_id": new_id("cus"),
            "external_id": f"c-{i}",
            "name": f"Customer {i} GmbH",
            "email": f"ap{i}@example.com",
            "locale": locale,
            "timezone": "Europe/Berlin",
        },
    }


async def run(dsn: str, smtp_port: int, count: int, concurrency: int, profile: str | None = None) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema, min_size=2, max_size=10)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for i in range(count):
                d = payload("ten_bench", i)
                await repo.insert_delivery(
                    conn,
                    delivery_id=new_id("dlv"),
                    tenant_id="ten_bench",
                    invoice_id=d["invoice_id"],
                    stage_id=d["stage_id"],
                    stage=d["stage"],
                    channel="email",
                    template=d["template"],
                    recipient=d["customer"]["email"],
                    payload=d,
                    source_event_id=str(uuid.uuid4()),
                    traceparent=None,
                )
        settings = Settings(smtp_port=smtp_port, dispatch_concurrency=concurrency, relay_enabled=False)
        dispatcher = build_dispatcher(pool, settings)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        task = asyncio.create_task(dispatcher.run())
        while await pool.fetchval("SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending')"):
            await asyncio.sleep(0.05)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        dispatcher.stop()
        await task
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        sent = await pool.fetchval("SELECT count(*) FROM deliveries WHERE state = 'sent'")
        events = await pool.fetchval("SELECT count(*) FROM outbox WHERE event_type = 'dunning.ReminderSent.v1'")
        print(
            f"notifier: {sent}/{count} reminders sent ({events} ReminderSent) in {elapsed:.2f}s"
            f" = {sent / elapsed:.0f}/s with {concurrency} SMTP connections;"
            f" notifier CPU {cpu / max(sent, 1) * 1000:.2f} ms per reminder"
        )
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await pool.close()


def serve_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--profile", help="write a cProfile of the dispatch phase to this file")
    parser.add_argument(
        "--server",
        choices=["devmail", "sink"],
        default="devmail",
        help="devmail: the dev stack's mail server (stores and indexes every message);"
        " sink: a bare aiosmtpd server that accepts and drops (the notifier's own ceiling)",
    )
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        return serve_sink(args.serve_sink)
    configure_logging("notifier-bench", os.environ.get("LOG_LEVEL", "WARNING"))
    workdir = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    with database(workdir) as db:
        bench(db.dsn, workdir, args)


def bench(dsn: str, workdir: Path, args: argparse.Namespace) -> None:
    smtp_port, http_port = free_port(), free_port()
    if args.server == "sink":
        mail = spawn(
            [sys.executable, "-m", "dunning_tools.bench.notifier", "--serve-sink", str(smtp_port)],
            log_path=workdir / "mail.log",
        )
    else:
        mail = mailserver.start(workdir / "mail", smtp_port, http_port, workdir / "mail.log")
    try:
        wait_for_port(smtp_port, proc=mail, what="smtp")
        uvloop.run(run(dsn, smtp_port, args.count, args.concurrency, args.profile))
        received = len(os.listdir(workdir / "mail" / "new")) if args.server == "devmail" else "(sink)"
        print(f"mail server received {received} messages; its CPU {cpu_seconds(mail.pid):.1f}s in all")
    finally:
        stop(mail)


if __name__ == "__main__":
    main()
