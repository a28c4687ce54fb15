"""The publisher's cadence from the scheduler's WatermarkWanted (dunning.watermark.Wanted)."""

from datetime import UTC, datetime, timedelta

import pytest

from dunning import watermark
from dunning.contracts import WatermarkWanted

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def word(wanted_from, computed_at=NOW):
    return WatermarkWanted(wanted_from=wanted_from, computed_at=computed_at)


def test_unheard_the_publisher_states_a_few_times_a_second():
    assert watermark.Wanted().interval(0.25, 10, NOW) == 0.25


def test_nothing_pending_slows_it_to_the_idle_cadence():
    w = watermark.Wanted()
    w.hear(word(None))
    assert w.interval(0.25, 10, NOW) == 10


def test_it_speeds_up_from_the_lead_before_the_time_wanted():
    w = watermark.Wanted(lead=1.0)
    w.hear(word(NOW + timedelta(seconds=4)))
    assert w.interval(0.25, 10, NOW) == pytest.approx(3.0)  # sleeps until a second before
    assert w.interval(0.25, 10, NOW + timedelta(seconds=3)) == 0.25
    assert w.interval(0.25, 10, NOW + timedelta(seconds=60)) == 0.25  # due and past: fast
    w.hear(word(NOW + timedelta(hours=1), NOW + timedelta(seconds=1)))
    assert w.interval(0.25, 10, NOW) == 10  # far ahead: the idle cadence caps the sleep


def test_an_older_word_does_not_override_a_newer_one_and_a_change_wakes_the_publisher():
    w = watermark.Wanted()
    woken = []
    w.on_change = lambda: woken.append(1)
    w.hear(word(NOW + timedelta(hours=1), NOW))
    w.hear(word(None, NOW - timedelta(seconds=1)))  # another replica's older word
    assert w.wanted_from == NOW + timedelta(hours=1)
    w.hear(word(NOW + timedelta(hours=1), NOW + timedelta(seconds=1)))  # the same time again: no wake
    w.hear(word(NOW + timedelta(seconds=2), NOW + timedelta(seconds=2)))
    assert len(woken) == 2


def test_a_word_not_heard_for_a_while_counts_as_none(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(watermark.time, "monotonic", lambda: clock[0])
    w = watermark.Wanted(stale=30)
    w.hear(word(None))
    assert w.interval(0.25, 10, NOW) == 10
    clock[0] += 31  # the scheduler went quiet: state as if it needed them
    assert w.interval(0.25, 10, NOW) == 0.25
