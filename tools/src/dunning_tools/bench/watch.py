"""What `make bench` watches the stack with: a topic's events, the outboxes and inboxes, pauses."""

import asyncio
import time
import uuid

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from dunning_tools.bench.cancel import assign_at_end
from dunning_tools.stack.system import Stack

SCHEMAS = ("ingest", "scheduler", "notifier", "reconciliation")


class Watcher:
    """Consumes a topic from the start (or, `from_end`, from what is published after entering) and
    keeps what the bench asks for."""

    def __init__(self, bootstrap: str, topic: str, from_end: bool = False):
        self.topic, self.from_end = topic, from_end
        self.consumer = AIOKafkaConsumer(
            *(() if from_end else (topic,)),
            bootstrap_servers=bootstrap,
            group_id=None if from_end else f"bench-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        self.events: list[tuple[float, dict]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self):
        await self.consumer.start()
        if self.from_end:
            await assign_at_end(self.consumer, self.topic)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self):
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batch.values():
                for r in records:
                    self.events.append((now, orjson.loads(r.value)))

    async def __aexit__(self, *exc):
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()

    def of(self, event_type: str, tenant_id: str) -> list[tuple[float, dict]]:
        return [(t, e) for t, e in self.events if e.get("type") == event_type and e.get("tenantid") == tenant_id]

    async def wait_for(self, event_type: str, tenant_id: str, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.of(event_type, tenant_id)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.of(event_type, tenant_id))}/{count} {event_type}")
            await asyncio.sleep(0.1)


async def progress(stack: Stack, stopped: tuple[str, ...] = ()) -> tuple[int, int]:
    """(rows waiting in the outboxes, events consumed so far) over the four services' schemas; the
    outboxes of `stopped` schemas (their service is down: nobody relays them) are not counted."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        waiting = sum([await conn.fetchval(f"SELECT count(*) FROM {s}.outbox") for s in SCHEMAS if s not in stopped])
        consumed = sum([await conn.fetchval(f"SELECT count(*) FROM {s}.inbox") for s in SCHEMAS])
        return waiting, consumed
    finally:
        await conn.close()


async def wait_until_quiet(
    stack: Stack, timeout: float = 600, consumed_at_least: int = 0, stopped: tuple[str, ...] = ()
) -> float:
    """Wait until every outbox is empty and no consumer has applied anything for 1.5 s (every
    consumer caught up), and at least `consumed_at_least` events are in the inboxes (consumers
    resumed after a long pause may take seconds to rejoin their group and apply anything: that is
    not quiet); returns the seconds it took, the quiet stretch excluded."""
    start = time.perf_counter()
    last, still = None, 0
    while still < 3:
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the system did not catch up")
        waiting, consumed = await progress(stack, stopped)
        still = still + 1 if waiting == 0 and consumed == last and consumed >= consumed_at_least else 0
        last = consumed
        await asyncio.sleep(0.5)
    return time.perf_counter() - start - 1.5


def signal_services(stack: Stack, names: list[str], sig: int) -> None:
    for sp in stack.procs:
        if sp.name in names:
            sp.kill(sig)
