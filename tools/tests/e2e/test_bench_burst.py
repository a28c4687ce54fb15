"""The burst bench, 200 reminders due at one instant for 20 customers on the e2e stack: every
reminder is mailed exactly once (a missing or a second mail fails it), and it reports every figure
(no timing is asserted)."""

import json

import pytest

from dunning_tools.bench import figures
from dunning_tools.bench.burst import KEYS, Config, bench, report

pytestmark = pytest.mark.e2e


async def test_a_small_burst_is_mailed_once_each_and_reports_its_figures(e2e_stack, tmp_path, monkeypatch):
    cfg = Config(
        reminders=200, customers=20, rounds=1, align=1, batch=100, calibrate=100, stall=20, margin=3, profile=False
    )
    figs, extra = await bench(e2e_stack, cfg, tmp_path)

    assert not extra["voided"]
    (r,) = extra["rounds"]
    assert r["reminders"] == r["fired"] == 200 and r["off_time"] == 0  # all due at the one instant
    assert r["mails"] == 200 and r["distinct_delivery_ids"] == 200 and r["distinct_message_ids"] == 200
    assert extra["lost"] == 0 and extra["duplicates"] == 0
    assert r["delivery_lateness_ms"]["n"] == 200 and r["firing_lateness_ms"]["n"] == 200
    assert r["ready_s_before_due"] > 0  # set up before the due instant, never racing it
    assert set(figs) == set(KEYS) and all(fig.median is not None for fig in figs.values())
    assert {"notifier", "scheduler", "postgresql", "broker"} <= set(extra["cpu_by_group"]["cpu_s"])

    monkeypatch.setattr(figures, "RUN_DIR", tmp_path)
    saved = json.loads(figures.save("burst", figs, extra).read_text())
    assert set(saved["figures"]) == set(KEYS) and saved["lost"] == 0 and saved["duplicates"] == 0
    assert "lost 0, twice 0" in report(figs, extra)
