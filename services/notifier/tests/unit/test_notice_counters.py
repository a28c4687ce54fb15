"""The per-process notice counters reach /metrics beside the delivery ones."""

import pytest

from dunning_notifier.metrics import DispatcherCounters

pytestmark = pytest.mark.unit


def test_notice_attempts_are_counted_by_outcome_beside_the_deliveries():
    counts = {"sent": 5, "notices_sent": 2, "notices_cancelled": 1}
    families = {f.name: f for f in DispatcherCounters(lambda: counts).collect()}
    notices = {s.labels["outcome"]: s.value for s in families["dunning_notifier_notice_sends"].samples}
    deliveries = {s.labels["outcome"]: s.value for s in families["dunning_notifier_sends"].samples}
    assert notices == {"sent": 2, "failed": 0, "retried": 0, "cancelled": 1}
    assert deliveries["sent"] == 5
