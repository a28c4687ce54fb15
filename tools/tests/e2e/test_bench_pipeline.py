"""The whole-pipeline bench, one short step at a low rate on the e2e stack: it reports every field,
and loses nothing, sends nothing twice and nothing after a payment or a hold (no timing is asserted)."""

import json

import pytest

from dunning_tools.bench import figures
from dunning_tools.bench.pipeline import Config, bench, report

pytestmark = pytest.mark.e2e

STEP_FIELDS = {
    "offered_reminders_per_s",
    "achieved_reminders_per_s",
    "ingested_invoices_per_s",
    "lateness_ms",
    "lateness_p99_ms_by_channel",
    "delivered_by_channel",
    "cancel_ms",
    "cpu_cores",
    "cpu_ms_per_reminder",
    "expected",
    "lost",
    "duplicates",
    "sent_after_stop",
    "stops",
}


async def test_one_short_step_reports_its_figures_and_loses_nothing(e2e_stack, tmp_path, monkeypatch):
    cfg = Config(rates=[6], lead=4, warm=1, measure=5, rounds=1, notifier_count=100, profile="none", refine=False)
    figs, extra = await bench(e2e_stack, cfg, tmp_path)

    (step,) = extra["steps"]
    assert STEP_FIELDS <= set(step)
    assert step["expected"] > 0 and step["lateness_ms"]["n"] > 0
    assert set(step["delivered_by_channel"]) == {"email", "sms", "webhook", "letter"}
    assert step["stops"]["paid"] > 0 and step["stops"]["failed"] == 0
    assert step["lost"] == 0 and step["sent_after_stop"] == 0 and step["duplicates"] == 0
    assert {"services", "postgresql", "broker", "notifier"} <= set(step["cpu_cores"])
    assert step["cpu_ms_per_reminder"]["total"] > 0

    assert set(figs) == {
        "reminders_per_s",
        "stack_cpu_ms_per_reminder",
        "notifier_alone_cpu_ms_per_reminder",
        "cancel_p99_ms_under_load",
        "lateness_p99_ms_at_best",
    }
    assert figs["notifier_alone_cpu_ms_per_reminder"].median > 0
    monkeypatch.setattr(figures, "RUN_DIR", tmp_path)
    saved = json.loads(figures.save("pipeline", figs, extra).read_text())
    assert saved["steps"][0]["lost"] == 0 and "notifier_alone_cpu_ms_per_reminder" in saved["figures"]
    assert "lost 0, sent after a stop 0" in report(figs, extra)
