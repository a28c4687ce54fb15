"""The wants loop: tells the acknowledging services when the gate next needs their statements.

Every `poll_seconds` it reads the earliest scheduled timer or gated deadline above the gate's
watermark (`repository.wanted_from`) and publishes WatermarkWanted when that changed, and every
`heartbeat_seconds` anyway (they fall back to stating a few times a second when they have not heard
for a while). Straight to the producer, as the statements themselves: it is advisory and only the
newest counts (docs/cancel-guarantee.md#statements-on-demand).
"""

import time
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from dunning.clock import utcnow
from dunning.contracts import WatermarkWanted, topic
from dunning.logging import get_logger
from dunning.loops import Backoff, Loop
from dunning.watermark import send_heartbeat
from dunning_scheduler import repository

log = get_logger(__name__)


class WantsLoop(Loop):
    name = "wants"
    error_event = "scheduler.wants.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        poll_seconds: float = 0.5,
        heartbeat_seconds: float = 20.0,
        payments_topic: str = repository.PAYMENTS_TOPIC,
        sources: Sequence[str] = repository.GATE_SOURCES,
        watermarks_topic: str = topic(WatermarkWanted),
    ):
        super().__init__(idle_seconds=poll_seconds, backoff=Backoff(initial=1.0, maximum=5.0))
        self.pool, self.producer = pool, producer
        self.heartbeat_seconds = heartbeat_seconds
        self.payments_topic, self.sources, self.watermarks_topic = payments_topic, tuple(sources), watermarks_topic
        self.last: datetime | None = None
        self.last_sent = float("-inf")  # time.monotonic()
        self.published = 0

    async def step(self) -> float | None:
        async with self.pool.acquire() as conn:
            wanted = await repository.wanted_from(conn, self.payments_topic, self.sources)
        if wanted != self.last or time.monotonic() - self.last_sent >= self.heartbeat_seconds:
            await self.publish(wanted)
        return None

    async def publish(self, wanted: datetime | None) -> None:
        await send_heartbeat(self.producer, self.watermarks_topic, WatermarkWanted(wanted, utcnow()), hint_to=self.pool)
        self.last, self.last_sent = wanted, time.monotonic()
        self.published += 1
