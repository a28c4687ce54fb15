# mypy: disable-error-code="unused-ignore"
"""PgQueuer as a reminder scheduler, used the way its documentation shows.

- scheduling: ``Queries.enqueue(entrypoint, payload, execute_after=timedelta)``
  for one job, and the same call with lists (one INSERT ... UNNEST) for many;
  ``execute_after`` is relative to the database's NOW() and may be negative;
- cancelling: ``Queries.mark_job_as_cancelled(ids)``: moves the rows to the
  log table as 'canceled' and NOTIFYs workers; it takes a list, so it is both
  the single and the batch cancel;
- workers: ``pgqueuer.run(factory, batch_size=..., max_concurrent_tasks=...)``,
  the programmatic ``pgq run`` (uvloop, SIGTERM handling), with the handler's
  own asyncpg pool handed in through ``resources``.

Vendored from the project's shared peers harness (shared/peers/, beside the repository), unchanged but
for the mypy line at the top (the harness's own ignores).
"""

from __future__ import annotations

import importlib.metadata
import json
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, AsyncIterator

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Context, Job
from pgqueuer.queries import Queries

from common import STAGE, UPSERT_ASYNCPG

NAME = "pgqueuer"
VERSION = importlib.metadata.version("pgqueuer")
ENTRYPOINT = "send_reminder"


def payload(invoice_id: int) -> bytes:
    return json.dumps({"invoice_id": invoice_id, "stage": STAGE}).encode()


async def send_reminder(job: Job, ctx: Context) -> None:
    """The job: record the reminder as sent (see common.UPSERT_ASYNCPG)."""
    assert job.payload is not None
    data = json.loads(job.payload)
    pool: asyncpg.Pool = ctx.resources["business_pool"]  # type: ignore[assignment]
    await pool.execute(UPSERT_ASYNCPG, data["invoice_id"], data["stage"])


class Peer:
    name = NAME
    version = VERSION
    batch_enqueue_api = "Queries.enqueue([...], execute_after=[...])"
    single_enqueue_api = "Queries.enqueue(..., execute_after=...)"
    batch_cancel_api: str | None = "Queries.mark_job_as_cancelled([ids])"
    single_cancel_api = "Queries.mark_job_as_cancelled([id])"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.queries: Queries | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def install(self) -> None:
        assert self.queries is not None
        await self.queries.install()

    async def enqueue_one(self, invoice_id: int, offset_s: float) -> int:
        assert self.queries is not None
        (job_id,) = await self.queries.enqueue(
            ENTRYPOINT, payload(invoice_id), execute_after=timedelta(seconds=offset_s)
        )
        return int(job_id)

    async def enqueue_many(self, invoice_ids: list[int], offset_s: float) -> list[int]:
        assert self.queries is not None
        n = len(invoice_ids)
        ids = await self.queries.enqueue(
            [ENTRYPOINT] * n,
            [payload(i) for i in invoice_ids],
            [0] * n,
            execute_after=[timedelta(seconds=offset_s)] * n,
        )
        return [int(i) for i in ids]

    async def cancel_one(self, job_id: int) -> None:
        assert self.queries is not None
        await self.queries.mark_job_as_cancelled([job_id])  # type: ignore[list-item]

    async def cancel_many(self, job_ids: list[int]) -> None:
        assert self.queries is not None
        await self.queries.mark_job_as_cancelled(job_ids)  # type: ignore[arg-type]

    async def runnable_jobs(self) -> int:
        assert self.conn is not None
        return await self.conn.fetchval(
            "SELECT count(*) FROM pgqueuer WHERE status = 'queued'"
        )

    async def job_states(self) -> dict[str, int]:
        assert self.conn is not None
        states: dict[str, int] = {}
        for r in await self.conn.fetch(
            "SELECT status::text AS s, count(*) AS n FROM pgqueuer GROUP BY 1"
        ):
            states[f"queue:{r['s']}"] = r["n"]
        for r in await self.conn.fetch(
            "SELECT status::text AS s, count(*) AS n FROM pgqueuer_log GROUP BY 1"
        ):
            states[f"log:{r['s']}"] = r["n"]
        return states


def make_factory(dsn: str, business_pool: int):
    @asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        conn = await asyncpg.connect(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=business_pool, max_size=business_pool)
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn, resources={"business_pool": pool})
            pgq.entrypoint(ENTRYPOINT)(send_reminder)
            yield pgq
        finally:
            await pool.close()
            await conn.close()

    return factory


async def run_worker(
    dsn: str, concurrency: int, business_pool: int, batch_size: int, **_: object
) -> None:
    await pgqueuer.run(
        make_factory(dsn, business_pool),
        batch_size=batch_size,
        max_concurrent_tasks=concurrency,
    )


def worker_main(args: Any) -> None:
    import asyncio

    runner = asyncio.run
    if args.loop in ("uvloop", "auto"):
        # `pgq run` runs on uvloop when it is installed (it is a dependency).
        import uvloop

        runner = uvloop.run
    runner(
        run_worker(
            args.dsn,
            concurrency=args.concurrency,
            business_pool=args.business_pool,
            batch_size=args.pgq_batch,
        )
    )
