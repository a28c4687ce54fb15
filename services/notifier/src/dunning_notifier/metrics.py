"""The notifier's own figures in the service's /metrics (dunning.metrics, prometheus_client).

Two kinds. Gauges read from the database at scrape time hold for the whole deployment (every replica
writes the same table) and survive restarts: deliveries by state, and the in-doubt deliveries and
attempts (the at-least-once window, see docs/), in all and per channel (each provider's window).
Counters (`_total`) are this process's dispatcher's since it started (Prometheus sums them across
replicas and handles the resets); absent when this process runs no dispatcher. The chaos harness and
tests read `dunning_notifier_in_doubt_attempts` and `dunning_notifier_in_doubt_reclaims_total`.
"""

from collections.abc import Callable, Iterable

import asyncpg
from prometheus_client.core import CounterMetricFamily, Metric

from dunning.metrics import Metrics
from dunning_notifier import notice_repository as notice_repo
from dunning_notifier import repository as repo
from dunning_notifier.channels import PROVIDERS

STATES = ("pending", "sending", "sent", "failed", "cancelled")
CHANNELS = tuple(PROVIDERS)
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

    by_channel = metrics.gauge(
        "dunning_notifier_channel_deliveries", "Deliveries by channel and state, all replicas.", ["channel", "state"]
    )
    window = metrics.gauge(
        "dunning_notifier_channel_in_doubt_attempts",
        "Each channel's provider window: attempts whose outcome was unknown (the provider may have it twice).",
        ["channel"],
    )

    async def refresh() -> None:
        rows = await repo.delivery_totals(pool)
        for state in STATES:
            deliveries.labels(state).set(sum(r["n"] for r in rows if r["state"] == state))
        in_doubt.set(sum(r["in_doubt"] for r in rows))
        attempts.set(sum(r["in_doubt_attempts"] for r in rows))
        for channel in CHANNELS:
            for state in STATES:
                by_channel.labels(channel, state).set(
                    sum(r["n"] for r in rows if r["channel"] == channel and r["state"] == state)
                )
            window.labels(channel).set(sum(r["in_doubt_attempts"] for r in rows if r["channel"] == channel))
        by_notice_state = await notice_repo.notice_totals(pool)
        for state in STATES:
            notices.labels(state).set(by_notice_state.get(state, 0))

    metrics.on_scrape(refresh)
    if counters is not None:
        metrics.register(DispatcherCounters(counters))
