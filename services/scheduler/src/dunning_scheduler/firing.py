"""The firing loop: due timers become StageEscalated events, in batches, exactly once.

Each step claims up to `batch_size` due timers (`FOR UPDATE SKIP LOCKED`, so several replicas
share the work and never fire a timer twice), marks them fired and writes one StageEscalated per
timer to the outbox, all in one transaction; the outbox relay publishes them. A full batch means
more are due: go again at once. Otherwise wait until the next timer is due or `poll_seconds`,
whichever is sooner; a NOTIFY on `scheduler_timers_<schema>` (sent when a timer is planned due
within `repository.WAKE_AHEAD_SECONDS`, when a pause ends and when a watermark statement arrives)
wakes the loop early, so at rest it looks once a second, not ten times, and a look with nothing due
reads the next timer's time alone (no firing transaction, no gate). Stop, wake and backoff are the
loop base's (dunning.loops).

A batch whose tenants configure firing rules (send window, contact caps, consolidation) or whose
policies charge fees or interest or have a minimum balance goes through `firing_apply.FiringRules`
in the same transaction (deferrals, skips, notices, charges); any other batch is fired as is.

The gate (repository.firing._FIRE_DUE: every acknowledging service's watermark) may hold due timers
back: then the loop waits for the next statement (its NOTIFY) or `poll_seconds`, and prunes
superseded watermark statements now and then.
"""

import time
from collections.abc import Iterable
from datetime import datetime

import asyncpg
from prometheus_client.core import CounterMetricFamily, Metric

from dunning import outbox
from dunning.clock import isoformat, utcnow
from dunning.consumer import INFRA_ERRORS
from dunning.logging import get_logger
from dunning.loops import Loop
from dunning_scheduler import messages, repository
from dunning_scheduler.firing_apply import FiringRules
from dunning_scheduler.planner import TIMERS_CHANNEL
from dunning_scheduler.policy_store import ActivePolicies

log = get_logger(__name__)

HELD_REPORT_SECONDS = 5.0  # due stages held this long by the gate are reported (scheduler.firing.held), this often


class FiringLoop(Loop):
    error_event = "scheduler.firing.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        batch_size: int = 2000,
        poll_seconds: float = 1.0,
        name: str = "firing",
        gated: bool = True,
        payments_topic: str = repository.PAYMENTS_TOPIC,
        sources: tuple[str, ...] = repository.GATE_SOURCES,
        policies: ActivePolicies | None = None,
    ):
        super().__init__(idle_seconds=poll_seconds, listen=(pool, f"{TIMERS_CHANNEL}_{schema}"))
        self.pool = pool
        self.schema = schema
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.name = name
        self.gated = gated
        self.payments_topic = payments_topic
        self.sources = sources
        self._last_prune = 0.0
        self._last_held_report = float("-inf")
        self.fired_total = 0  # counters for metrics and the bench (errors: the loop base's)
        self.batches = 0
        self.last_fired_at: float | None = None  # time.monotonic() of the last non-empty batch
        self.claimed = 0  # timers the last step claimed (fired, deferred or skipped)
        # The tenants' settings and policies (the process's, from bootstrap; else this loop's own).
        self.rules = FiringRules(policies, gated=gated, payments_topic=payments_topic, sources=sources)

    async def fire_once(self) -> int:
        """Fire one batch of due timers; returns how many fired."""
        fired = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await repository.fire_due(
                conn, self.batch_size, gated=self.gated, payments_topic=self.payments_topic, sources=self.sources
            )
            if rows and not await self.rules.needs_rules(conn, rows):
                await outbox.add_many(conn, [messages.stage_escalated(r) for r in rows])
                fired = len(rows)
            elif rows:
                events, fired = await self.rules.apply(conn, rows)
                await outbox.add_many(conn, events)
        self.claimed = len(rows)
        if fired:
            self.fired_total += fired
            self.batches += 1
            self.last_fired_at = time.monotonic()
            log.debug("scheduler.stages.fired", count=fired, claimed=len(rows))
        return fired

    async def step(self) -> float | None:
        next_due = await self._next_due()
        if next_due is not None and next_due <= utcnow():  # due (the gate may still hold it): fire
            await self.fire_once()
            if self.claimed >= self.batch_size:
                return 0  # more are due: go again at once
            next_due = await self._next_due()
        return await self._sleep_seconds(next_due)

    async def _next_due(self) -> datetime | None:
        """The earliest scheduled timer's time (one probe of timers_due: with none due, a step costs no
        firing transaction and no gate), pruning superseded statements now and then."""
        async with self.pool.acquire() as conn:
            if self.gated and time.monotonic() - self._last_prune > 30:
                self._last_prune = time.monotonic()
                await repository.prune_watermarks(conn)
            return await repository.next_due_at(conn)

    async def _sleep_seconds(self, next_due: datetime | None) -> float:
        if next_due is None:
            return self.poll_seconds
        wait = (next_due - utcnow()).total_seconds()
        if wait <= 0:  # due but held by the gate: the next watermark's NOTIFY wakes us
            if self.gated and -wait >= HELD_REPORT_SECONDS:
                await self._report_held()
            return self.poll_seconds
        return min(self.poll_seconds, wait)

    async def _report_held(self) -> None:
        """Say why due stages wait, at most every HELD_REPORT_SECONDS while the gate holds any back
        that long: how many, the oldest, the gate's watermark and each source's best usable statement
        (a held customer's stage under the gate waits for its hold, not the gate: not counted)."""
        if time.monotonic() - self._last_held_report < HELD_REPORT_SECONDS:
            return
        async with self.pool.acquire() as conn:
            held = await repository.held_by_gate(conn, self.payments_topic, self.sources)
        if held is None:
            return
        waited = (utcnow() - held["oldest"]).total_seconds()
        if waited < HELD_REPORT_SECONDS:
            return
        self._last_held_report = time.monotonic()
        log.warning(
            "scheduler.firing.held",
            loop=self.name,
            held=held["held"],
            oldest_due=isoformat(held["oldest"]),
            held_seconds=round(waited, 1),
            watermark=isoformat(held["watermark"]) if held["watermark"] else None,
            sources=held["sources"],
        )

    def on_error(self, exc: Exception, retry_in: float) -> None:
        if isinstance(exc, INFRA_ERRORS):
            log.warning("scheduler.firing.error", loop=self.name, error=repr(exc), retry_in=round(retry_in, 3))
        else:  # the batch rolled back; it is retried, never lost
            log.error("scheduler.firing.failed", loop=self.name, retry_in=round(retry_in, 3), exc_info=exc)

    async def setup(self) -> None:
        log.info("scheduler.firing.started", loop=self.name, batch_size=self.batch_size)

    async def teardown(self) -> None:
        log.info("scheduler.firing.stopped", loop=self.name, fired_total=self.fired_total)

    # -- metrics -------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """This process's counters (prometheus_client's collector protocol)."""
        for name, help_, value in (
            ("scheduler_stages_fired", "Stages fired (StageEscalated written) by this process.", self.fired_total),
            ("scheduler_firing_batches", "Non-empty firing batches of this process.", self.batches),
            ("scheduler_firing_errors", "Firing steps that failed and were retried.", self.errors),
            (
                "scheduler_stages_deferred",
                "Due stages deferred by a send window, cap or quiet period.",
                self.rules.deferred_total,
            ),
            (
                "scheduler_stages_skipped_below_minimum",
                "Due stages skipped below the minimum balance.",
                self.rules.skipped_total,
            ),
            (
                "scheduler_notices_composed",
                "Consolidated notices composed (one per channel).",
                self.rules.notices_total,
            ),
            (
                "scheduler_charges_assessed",
                "Late charges assessed (LateChargesAssessed written).",
                self.rules.assessed_total,
            ),
        ):
            family = CounterMetricFamily(name, help_, labels=["loop"])
            family.add_metric([self.name], value)
            yield family
