"""The deadline loop: the decisions that wait for a time — a hold's `ends_at` (resume, hold_expired),
a promise's deadline (kept already, or broken now), an instalment's (covered, or the plan broken).

A step takes the due deadlines (`FOR UPDATE SKIP LOCKED`, deleted as they are taken, so replicas
share them and each is judged once) and judges them in time order, in one transaction. A hold's end
is due at its time; a promise's or an instalment's only once the firing gate's watermark
(`repository.gate_state`: the minimum over every acknowledging service) is at or past it, so a
payment acknowledged before the deadline is always applied before it is judged, however late it
travels. With the gate off (a scheduler without reconciliation), at its time. It polls every
`poll_seconds` (deadlines are few; one second late is well inside any grace); a look that finds no
deadline at its time reads nothing more (no transaction, no gate).
"""

from collections.abc import Sequence

import asyncpg

from dunning.clock import utcnow
from dunning.logging import get_logger
from dunning.loops import Loop
from dunning_scheduler import pauser, plans, repository
from dunning_scheduler.policy_store import ActivePolicies

log = get_logger(__name__)


class DeadlineLoop(Loop):
    name = "deadlines"
    error_event = "scheduler.deadlines.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        policies: ActivePolicies,
        *,
        poll_seconds: float = 0.5,
        batch_size: int = 200,
        gated: bool = True,
        payments_topic: str = repository.PAYMENTS_TOPIC,
        sources: Sequence[str] = repository.GATE_SOURCES,
    ):
        super().__init__(idle_seconds=poll_seconds)
        self.pool = pool
        self.policies = policies
        self.batch_size = batch_size
        self.gated = gated
        self.payments_topic = payments_topic
        self.sources = tuple(sources)
        self.judged = 0

    async def step(self) -> float | None:
        return 0 if await self.judge_once() >= self.batch_size else None

    async def judge_once(self) -> int:
        """Judge the deadlines due now (gated ones under the gate's watermark); returns how many."""
        async with self.pool.acquire() as conn:
            if not await repository.any_deadline_due(conn):  # the usual look: nothing due, no gate read
                return 0
        async with self.pool.acquire() as conn, conn.transaction():
            if self.gated:
                gate = await repository.gate_state(conn, self.payments_topic, self.sources)
                watermark = gate["watermark"]
            else:
                watermark = utcnow()
            due = await repository.take_due_deadlines(conn, watermark, self.batch_size)
            for deadline in due:
                if deadline["kind"] == "instalment":
                    await plans.on_deadline(conn, deadline, policies=self.policies)
                else:
                    await pauser.on_deadline(conn, deadline, policies=self.policies)
        if due:
            self.judged += len(due)
            log.info("scheduler.deadlines.judged", count=len(due))
        return len(due)
