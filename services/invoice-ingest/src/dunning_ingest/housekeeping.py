"""Housekeeping loop: forget Idempotency-Key results after 24 h and inbox ids after the broker's retention."""

import asyncio

import asyncpg

from dunning import inbox
from dunning.logging import get_logger

from dunning_ingest.idempotency import IdempotencyStore

log = get_logger(__name__)


class Housekeeping:
    def __init__(self, pool: asyncpg.Pool, idempotency: IdempotencyStore, *, interval_seconds: float = 600.0,
                 inbox_retention_days: int = 14):
        self.pool = pool
        self.idempotency = idempotency
        self.interval = interval_seconds
        self.inbox_retention_days = inbox_retention_days
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> None:
        keys = await self.idempotency.purge()
        async with self.pool.acquire() as conn:
            ids = await inbox.purge(conn, self.inbox_retention_days)
        if keys or ids:
            log.info("ingest.housekeeping.purged", idempotency_keys=keys, inbox_ids=ids)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - try again next interval
                log.warning("ingest.housekeeping.failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass
