"""The scheduler's own figures in the service's /metrics (dunning.metrics, prometheus_client).

- `dunning_scheduler_cancel_latency_seconds`: from a payment's acknowledgement by reconciliation to its
  invoice's pending stages cancelled here (observed by the PaymentReceived handler; the bench measures
  the same under load). Counts this process's cancellations.
- timer backlog (due, not fired), how long the oldest has been due, and the age of the newest
  watermark statement per acknowledging service (`dunning_scheduler_watermark_age_seconds{source}`;
  reconciliation's also as `dunning_scheduler_payments_watermark_age_seconds`): read at scrape time,
  they hold for every replica. A growing age means the gate holds stages back (that service or its
  relay is stalled, or this consumer lags).
- the firing loop's counters come with the loop (FiringLoop.collect).
"""

import asyncpg
from prometheus_client import Histogram

from dunning.metrics import Metrics
from dunning_scheduler import repository

CANCEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


def cancel_latency() -> Histogram:
    """Not registered anywhere yet: bootstrap injects it into the handler table and registers it."""
    return Histogram(
        "dunning_scheduler_cancel_latency_seconds",
        "Payment acknowledged (reconciliation) to its invoice's pending stages cancelled.",
        buckets=CANCEL_BUCKETS,
        registry=None,
    )


def instrument(metrics: Metrics, pool: asyncpg.Pool, *, latency: Histogram | None = None) -> None:
    if latency is not None:
        metrics.register(latency)
    backlog = metrics.gauge(
        "dunning_scheduler_timers_due",
        "Timers due and not fired (held back by the payments gate, or waiting for the firing loop).",
    )
    oldest = metrics.gauge(
        "dunning_scheduler_timers_oldest_due_age_seconds", "How long the oldest timer not fired has been due (0: none)."
    )
    watermark_age = metrics.gauge(
        "dunning_scheduler_payments_watermark_age_seconds",
        "Age of the newest payments watermark received (NaN: none yet).",
    )
    source_age = metrics.gauge(
        "dunning_scheduler_watermark_age_seconds",
        "Age of the newest watermark statement received from each acknowledging service.",
        ["source"],
    )

    async def refresh() -> None:
        async with pool.acquire() as conn:
            row = await repository.firing_gauges(conn)
        backlog.set(row["due"])
        oldest.set(row["oldest_due_age"] or 0.0)
        watermark_age.set(row["watermark_age"] if row["watermark_age"] is not None else float("nan"))
        for source, age in row["watermark_ages"].items():
            source_age.labels(source=source).set(age)

    metrics.on_scrape(refresh)
