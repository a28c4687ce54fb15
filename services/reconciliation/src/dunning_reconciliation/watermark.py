"""The payments watermark: how far what reconciliation knows about payments has been published.

A few times a second one replica (elected by an advisory lock) states "every payment acknowledged at
or before W is on the payments topic below these offsets, and every late match made while applying
the invoices topic up to these positions is published there" on `dunning.watermarks.v1`; the
scheduler fires a stage only under such a statement it has caught up with, so a stalled relay or a
dead reconciliation makes reminders wait instead of firing blind. Acknowledging transactions join a
shared fence (`repository.acknowledge_time`) so the publisher can tell which of them have committed
without ever making one wait. A credit note is acknowledged the same way and travels on the payments
topic (CreditNoteIssued), so every statement covers credit notes exactly as it covers payments. The
steps and why each statement is true forever: docs/cancel-guarantee.md#the-payments-watermark.
"""

import contextlib
from collections import deque
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from dunning.clock import utcnow
from dunning.events import dumps, envelope
from dunning.logging import get_logger
from dunning.loops import Backoff, Loop
from dunning.outbox import headers_of
from dunning_reconciliation import messages, repository

log = get_logger(__name__)

_EPSILON = timedelta(microseconds=1)
_HISTORY_MAX = 10_000


class WatermarkPublisher(Loop):
    """Publishes the payments watermark while this replica leads (a session advisory lock, held on one
    connection, elects it); the others try to take the lead every four intervals. Each step is one
    statement. A failed step gives up the lead and the connection (no statement is the safe side),
    then the loop base retries after its backoff."""

    name = "watermark"
    error_event = "reconciliation.watermark.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        payments_topic: str,
        invoices_topic: str,
        watermarks_topic: str,
        interval_seconds: float = 0.25,
    ):
        super().__init__(idle_seconds=interval_seconds, backoff=Backoff(initial=1.0, maximum=5.0))
        self.pool = pool
        self.producer = producer
        self.payments_topic = payments_topic
        self.invoices_topic = invoices_topic
        self.watermarks_topic = watermarks_topic
        self.interval = interval_seconds
        self._conn: asyncpg.Connection | None = None  # held for the session lock
        self._leading = False
        self._history: deque[tuple[datetime, dict[str, int]]] = deque()
        self._certified: dict[str, int] = {}
        self.published = 0
        self.last: dict[str, Any] | None = None

    async def step(self) -> float:
        try:
            if self._conn is None:
                self._conn = await self.pool.acquire()
            if not self._leading:
                if not await repository.try_lead_watermark(self._conn):
                    return self.interval * 4  # another replica publishes
                self._leading = True
                self._history.clear()
                log.info("reconciliation.watermark.leading")
            await self.publish_once(self._conn)
            return self.interval
        except BaseException:
            await self._resign()
            raise

    async def teardown(self) -> None:
        await self._resign()

    async def _resign(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await repository.resign_watermark(conn)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def publish_once(self, conn: asyncpg.Connection) -> dict[str, Any]:
        before = await repository.clock(conn)
        held = await repository.fence_holders(conn)
        if held["unknown"]:
            raise RuntimeError("cannot see the start time of a transaction holding the acknowledgement fence")
        fence = before if held["oldest"] is None else min(before, held["oldest"] - _EPSILON)
        snap = await repository.watermark_snapshot(conn, self.payments_topic, self.invoices_topic)
        oldest = snap["oldest_waiting"]
        watermark = fence if oldest is None else min(fence, oldest - _EPSILON)
        self._history.append((snap["read_at"], {k: int(v) for k, v in snap["positions"].items()}))
        # The newest positions read by a snapshot older than every waiting row: the late matches of
        # the transactions that snapshot saw are published. (History is in read order.)
        while self._history and (oldest is None or self._history[0][0] < oldest):
            self._certified = self._history.popleft()[1]
        while len(self._history) > _HISTORY_MAX:  # a long stall: keep the newest candidates
            self._history.popleft()
        offsets = {k: int(v) for k, v in snap["published"].items()}
        data: dict[str, Any] = {
            "watermark": watermark,
            "payments_topic": self.payments_topic,
            "payments_offsets": offsets,
            "invoices_topic": self.invoices_topic,
            "invoice_positions": self._certified,
            "computed_at": utcnow(),
        }
        statement = envelope(messages.payments_watermark(**data), traceparent=None)  # a heartbeat: no trace
        await (
            await self.producer.send(
                self.watermarks_topic,
                value=dumps(statement),
                key=b"_payments",
                headers=[(k, v.encode()) for k, v in headers_of(statement).items()],
            )
        )
        self.published += 1
        self.last = data
        if oldest is not None and fence - oldest > timedelta(seconds=30):
            log.warning(
                "reconciliation.watermark.held_back",
                oldest_waiting=oldest.isoformat(),
                behind_seconds=round((fence - oldest).total_seconds(), 1),
            )
        return data
