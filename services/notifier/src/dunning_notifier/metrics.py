"""The notifier's own figures in the service's /metrics (dunning.metrics, prometheus_client).

Two kinds. Gauges read from the database at scrape time hold for the whole deployment (every replica
writes the same table) and survive restarts: deliveries by state, and the in-doubt deliveries and
attempts (the at-least-once window, see docs/). Counters (`_total`) are this process's dispatcher's
since it started (Prometheus sums them across replicas and handles the resets); absent when this
process runs no dispatcher. The chaos harness and tests read `dunning_notifier_in_doubt_attempts`
and `dunning_notifier_in_doubt_reclaims_total`.
"""

from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client.core import CounterMetricFamily, Metric

from dunning.metrics import Metrics
from dunning_notifier import notice_repository as notice_repo
from dunning_notifier import repository as repo

STATES = ("pending", "sending", "sent", "failed", "cancelled")
OUTCOMES = ("sent", "failed", "retried", "cancelled")  # cancelled: a retry a stop of its invoice dropped


class DispatcherCounters:
    """This process's dispatcher counters (Dispatcher.counters()), as a prometheus_client collector."""

    def __init__(self, counters: Callable[[], dict[str, int]]):
        self.counters = counters

    def collect(self) -> Iterable[Metric]:
        counts = self.counters()
        sends = CounterMetricFamily(
            "dunning_notifier_sends", "Attempts recorded by this process, by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            sends.add_metric([outcome], counts.get(outcome, 0))
        yield sends
        notices = CounterMetricFamily(
            "dunning_notifier_notice_sends",
            "Consolidated-notice attempts recorded by this process, by outcome.",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            notices.add_metric([outcome], counts.get(f"notices_{outcome}", 0))
        yield notices
        for name, key, help_ in (
            (
                "dunning_notifier_in_doubt_reclaims",
                "in_doubt_reclaims",
                "Expired leases this process took back (the previous attempt's outcome unknown).",
            ),
            (
                "dunning_notifier_in_doubt_retries",
                "in_doubt_retries",
                "Sends by this process that timed out or dropped after DATA and were retried.",
            ),
            (
                "dunning_notifier_lease_lost",
                "lease_lost",
                "Outcomes this process could not record: the delivery had been re-claimed elsewhere.",
            ),
        ):
            family = CounterMetricFamily(name, help_)
            family.add_metric([], counts.get(key, 0))
            yield family


def instrument(metrics: Metrics, pool: asyncpg.Pool, counters: Callable[[], dict[str, int]] | None = None) -> None:
    """Register the delivery gauges (read at each scrape) and, if this process dispatches, its counters."""
    deliveries = metrics.gauge("dunning_notifier_deliveries", "Deliveries by state, all replicas.", ["state"])
    in_doubt = metrics.gauge(
        "dunning_notifier_deliveries_in_doubt",
        "Deliveries with at least one attempt whose outcome was unknown (may have been sent twice).",
    )
    notices = metrics.gauge("dunning_notifier_notices", "Consolidated notices by state, all replicas.", ["state"])
    attempts = metrics.gauge(
        "dunning_notifier_in_doubt_attempts",
        "Attempts whose outcome was unknown (lease ran out, or no reply after DATA), all deliveries.",
    )

    async def refresh() -> None:
        by_state, in_doubt_deliveries, in_doubt_attempts = await repo.delivery_totals(pool)
        for state in STATES:
            deliveries.labels(state).set(by_state.get(state, 0))
        in_doubt.set(in_doubt_deliveries)
        attempts.set(in_doubt_attempts)
        by_notice_state = await notice_repo.notice_totals(pool)
        for state in STATES:
            notices.labels(state).set(by_notice_state.get(state, 0))

    metrics.on_scrape(refresh)
    if counters is not None:
        metrics.register(DispatcherCounters(counters))
