"""The chaos harness's aim: each kind's share within +-50 ms, and whether a kind under 80 % fails the run."""

import statistics
from types import SimpleNamespace

import pytest

from dunning_tools.chaos import aim

pytestmark = pytest.mark.unit


def stop(via: str, offset_ms: float) -> SimpleNamespace:
    return SimpleNamespace(via=via, acknowledged_at=100.0 + offset_ms / 1000, raced=True)


def shares_of(offsets: dict[str, list[float]]) -> dict[str, dict]:
    stops = [stop(via, o) for via, values in offsets.items() for o in values]
    return aim.shares(stops, lambda s: 100.0, 50)


def test_a_kind_under_the_bar_fails_a_judged_run_and_is_only_reported_by_the_short_one():
    share = shares_of({"hold": [0, 10, -20, 70, 300], "void": [0, 5, 10, 20, -30]})
    assert (share["hold"]["within"], share["void"]["within"]) == (3, 5)
    judged, reported = aim.Aim(judged=True).verdict(share), aim.Aim(judged=False).verdict(share)
    assert judged["kinds_below_share"] == reported["kinds_below_share"] == ["hold"]
    assert aim.failing(judged) and not aim.failing(reported)
    assert aim.below_note(judged) == "; BELOW 80 %: ['hold']"
    assert aim.below_note(reported).endswith("(reported, not judged: the short run)")


def test_every_kind_at_the_bar_or_too_few_stops_to_judge_passes():
    share = shares_of({"hold": [0, 10, -20, 40, 300], "void": [500, 600]})  # 4/5 = 80 %; 2 stops
    verdict = aim.Aim(judged=True).verdict(share)
    assert verdict["kinds_below_share"] == [] and not aim.failing(verdict) and aim.below_note(verdict) == ""


def test_the_lead_follows_the_load_of_any_kind_once_there_are_enough_samples():
    a = aim.Aim(recent=3)
    assert a.lead("hold") == pytest.approx(0.02)  # the first guess
    for latency in (0.1, 0.3, 0.2):
        a.learn("void", 10.0, 10.0 + latency)
    assert a.lead("hold") == pytest.approx(0.2)  # the median of the last three of any kind


def test_a_kind_slower_than_the_others_is_led_by_its_usual_difference():
    a = aim.Aim(recent=3)
    for i in range(12):  # holds at 20 ms, payments at 50 ms, alternating
        a.learn("hold", 10.0 * i, 10.0 * i + 0.02)
        a.learn("payment", 10.0 * i + 5, 10.0 * i + 5.05)
    base = statistics.median(a.last)
    assert a.lead("payment") > a.lead("hold")
    assert a.lead("payment") - base == pytest.approx(statistics.median(a.residuals["payment"]))
    assert a.lead("new_kind") == pytest.approx(base)  # no residual yet: the load alone
