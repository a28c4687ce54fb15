"""procrastinate as a reminder scheduler, used the way its documentation shows.

- scheduling: ``task.configure(schedule_in={"seconds": s}).defer_async(...)``
  (one job) and ``.batch_defer_async(*kwargs)`` (one INSERT for many jobs that
  share the same configure() options, hence the same schedule);
- cancelling: ``app.job_manager.cancel_job_by_id_async(job_id)``; there is no
  call that cancels several ids at once;
- workers: ``app.run_worker_async(concurrency=...)``, stopped by SIGTERM
  through procrastinate's own signal handlers.

Vendored unchanged from the project's shared peers harness (shared/peers/, beside the repository).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import procrastinate
import psycopg_pool

from common import STAGE, UPSERT_PSYCOPG

NAME = "procrastinate"
VERSION = importlib.metadata.version("procrastinate")
TASK_NAME = "send_reminder"

# The application's own pool for business writes, opened in each worker process.
_business_pool: psycopg_pool.AsyncConnectionPool | None = None


async def send_reminder(invoice_id: int, stage: str = STAGE) -> None:
    """The job: record the reminder as sent (see common.UPSERT_PSYCOPG)."""
    assert _business_pool is not None, "worker opens the business pool first"
    async with _business_pool.connection() as conn:
        await conn.execute(UPSERT_PSYCOPG, (invoice_id, stage))


def make_app(dsn: str, pool_size: int) -> tuple[procrastinate.App, Any]:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=pool_size
        )
    )
    task = app.task(name=TASK_NAME)(send_reminder)
    return app, task


class Peer:
    name = NAME
    version = VERSION
    batch_enqueue_api = "configure(schedule_in=...).batch_defer_async"
    single_enqueue_api = "configure(schedule_in=...).defer_async"
    batch_cancel_api: str | None = None
    single_cancel_api = "job_manager.cancel_job_by_id_async"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.app, self.task = make_app(dsn, pool_size=4)

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def install(self) -> None:
        await self.app.schema_manager.apply_schema_async()

    async def enqueue_one(self, invoice_id: int, offset_s: float) -> int:
        return await self.task.configure(schedule_in={"seconds": offset_s}).defer_async(
            invoice_id=invoice_id, stage=STAGE
        )

    async def enqueue_many(self, invoice_ids: list[int], offset_s: float) -> list[int]:
        return await self.task.configure(
            schedule_in={"seconds": offset_s}
        ).batch_defer_async(*({"invoice_id": i, "stage": STAGE} for i in invoice_ids))

    async def cancel_one(self, job_id: int) -> None:
        if not await self.app.job_manager.cancel_job_by_id_async(job_id):
            raise RuntimeError(f"procrastinate refused to cancel job {job_id}")

    async def cancel_many(self, job_ids: list[int]) -> None:
        raise NotImplementedError("procrastinate has no batch cancel")

    async def runnable_jobs(self) -> int:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'"
        )
        return int(rows[0]["n"])

    async def job_states(self) -> dict[str, int]:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1"
        )
        return {r["status"]: int(r["n"]) for r in rows}


async def run_worker(
    dsn: str, concurrency: int, lib_pool: int, business_pool: int, **_: object
) -> None:
    global _business_pool
    app, _task = make_app(dsn, pool_size=lib_pool)
    _business_pool = psycopg_pool.AsyncConnectionPool(
        dsn,
        min_size=business_pool,
        max_size=business_pool,
        kwargs={"autocommit": True},
        open=False,
    )
    await _business_pool.open(wait=True)
    try:
        async with app.open_async():
            await app.run_worker_async(concurrency=concurrency, wait=True)
    finally:
        await _business_pool.close()


def worker_main(args: Any) -> None:
    runner = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    runner(
        run_worker(
            args.dsn,
            concurrency=args.concurrency,
            lib_pool=args.lib_pool,
            business_pool=args.business_pool,
        )
    )
