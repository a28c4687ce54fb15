"""/metrics in the Prometheus text exposition format (version 0.0.4).

Two kinds of figures. Gauges read from the database hold for the whole deployment (every replica
writes the same table) and survive restarts: deliveries by state, and the in-doubt deliveries and
attempts (the at-least-once window, see dispatcher.py). Counters ending in `_total` are this
process's since it started (Prometheus sums them across replicas and handles the resets).

Written by hand rather than with prometheus_client: the pinned requirements do not include it, and
the format for a dozen unlabelled or singly-labelled samples is three lines per family.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from dunning_notifier import repository as repo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("pending", "sending", "sent", "failed")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def render(families: Iterable[Family]) -> str:
    lines = []
    for f in families:
        lines += [f"# HELP {f.name} {f.help}", f"# TYPE {f.name} {f.kind}"]
        lines += [f"{f.name}{_labels(labels)} {value:g}" for labels, value in f.samples]
    return "\n".join(lines) + "\n"


async def collect(pool: asyncpg.Pool, counters: dict[str, int]) -> list[Family]:
    """The database gauges plus this process's dispatcher counters (Dispatcher.counters())."""
    by_state, in_doubt_deliveries, in_doubt_attempts = await repo.delivery_totals(pool)
    families = [
        Family("dunning_notifier_deliveries", "gauge", "Deliveries by state, all replicas.",
               [({"state": s}, by_state.get(s, 0)) for s in STATES]),
        Family("dunning_notifier_deliveries_in_doubt", "gauge",
               "Deliveries with at least one attempt whose outcome was unknown (may have been sent twice).",
               [({}, in_doubt_deliveries)]),
        Family("dunning_notifier_in_doubt_attempts", "gauge",
               "Attempts whose outcome was unknown (lease ran out, or no reply after DATA), all deliveries.",
               [({}, in_doubt_attempts)]),
    ]
    if counters:
        families += [
            Family("dunning_notifier_sends_total", "counter", "Attempts recorded by this process, by outcome.",
                   [({"outcome": o}, counters.get(o, 0)) for o in ("sent", "failed", "retried")]),
            Family("dunning_notifier_in_doubt_reclaims_total", "counter",
                   "Expired leases this process took back (the previous attempt's outcome unknown).",
                   [({}, counters.get("in_doubt_reclaims", 0))]),
            Family("dunning_notifier_in_doubt_retries_total", "counter",
                   "Sends by this process that timed out or dropped after DATA and were retried.",
                   [({}, counters.get("in_doubt_retries", 0))]),
            Family("dunning_notifier_lease_lost_total", "counter",
                   "Outcomes this process could not record: the delivery had been re-claimed elsewhere.",
                   [({}, counters.get("lease_lost", 0))]),
        ]
    return families
