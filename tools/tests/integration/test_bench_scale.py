"""The scale bench end to end, small: every figure measured, each trickle stage fired exactly once."""

import json

import pytest

from dunning_tools.bench import figures, scale

pytestmark = pytest.mark.integration

KEYS = {
    "firing_lateness_p99_ms_10m",
    "firing_lateness_p99_ms_10k",
    "firing_lateness_p50_ms_10m",
    "firing_lateness_p50_ms_10k",
    "planning_per_s_10m",
    "planning_per_s_10k",
    "bytes_per_timer",
}


async def test_the_scale_bench_reports_every_figure_and_fires_each_trickle_stage_once(infra, tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "RUN_DIR", tmp_path)
    sizes = scale.Sizes(big=20_000, small=2_000, invoices=200, trickle=200, window=5.0, rounds=1)

    figs, extra = await scale.run(infra.database_url, sizes, say=lambda *_: None)
    saved = json.loads(figures.save("scale", figs, {"extra": extra}).read_text())

    assert set(saved["figures"]) == KEYS
    assert all(f["median"] is not None and f["median"] > 0 for f in saved["figures"].values())
    assert [(r["size"], r["fired"], r["escalated_once"]) for r in extra["rounds"]] == [
        ("10k", 200, 200),
        ("10m", 200, 200),
    ]
    assert extra["sizes"]["10m"]["pending_timers"] >= 20_000
    assert extra["sizes"]["10k"]["pending_timers"] < 20_000
    assert all("Update on timers" in plans["firing"] for plans in extra["explain"].values())
