"""`make bench-quick` at the smallest sizes: every figure of issue 13's table that the whole-stack
bench measures is reported with its rounds, each phase's CPU per process group is saved beside
them, and the main phases are profiled (or the reason they are not is reported). About 1.5
minutes; no timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

KEYS = (
    "single_post_invoices_per_s",
    "bare_fastapi_insert_per_s",
    "bulk_invoices_per_s",
    "copy_rows_per_s",
    "downstream_catch_up_invoices_per_s",
    "cancel_p50_ms_quiet",
    "cancel_p99_ms_quiet",
    "cancel_p50_ms_under_load",
    "cancel_p99_ms_under_load",
    "escalated_stages_per_s",
    "reminders_delivered_per_s",
    "at_rest_cpu_pct",
    "rss_max_mb",
    "rss_max_mb_after_load",
)
PROFILED = ("single_post", "catch_up", "cancel_under_load", "escalate_drain", "deliver")
SMALL = {
    "BENCH_SINGLE": "300",
    "BENCH_BULK": "3000",
    "BENCH_CANCEL": "20",
    "BENCH_LOAD_CANCEL": "20",
    "BENCH_ESCALATE": "1000",
    "BENCH_DELIVERY_SECONDS": "3",
    "BENCH_REST_SECONDS": "2",
    "BENCH_REST_SETTLE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bench")
    env = {**os.environ, **SMALL, "BENCH_RUN_DIR": str(workdir / ".run")}
    proc = subprocess.run(
        [sys.executable, "-m", "dunning_tools.bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=workdir,
        env=env,
    )
    output = f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    return json.loads((workdir / ".run" / "bench-system.json").read_text()), workdir, proc.stdout


def test_every_figure_of_the_table_is_measured_with_its_rounds(run):
    saved, workdir, _ = run
    for key in KEYS:
        figure = saved["figures"][key]
        assert figure["rounds"], key  # never "not measured"
        assert figure["median"] is not None and figure["median"] >= 0, key
        assert figure["spread"][0] <= figure["median"] <= figure["spread"][1], key
    assert saved["rounds"] == 1
    quick = json.loads((workdir / ".run" / "bench-quick.json").read_text())
    assert quick["escalated_stages_per_s"] == saved["figures"]["escalated_stages_per_s"]["median"]


def test_each_phase_reports_its_cpu_by_process_group(run):
    saved, _, stdout = run
    phases = saved["cpu_by_phase"]
    for phase in ("at_rest", "single_post", "bare_fastapi", "bulk", "copy", "catch_up", *PROFILED[2:]):
        assert phase in phases, phase
        assert phases[phase]["seconds"] > 0
    assert phases["single_post"]["cpu_s"]["invoice-ingest"] > 0
    assert phases["bare_fastapi"]["cpu_s"]["reference"] > 0
    assert phases["catch_up"]["cpu_s"]["postgresql"] > 0
    assert phases["escalate_drain"]["cpu_s"]["scheduler"] > 0  # restarted in the phase: still counted
    assert "CPU per phase" in stdout


def test_the_main_phases_are_profiled_or_say_why_not(run):
    saved, _, _ = run
    for phase in PROFILED:
        written = saved["profiles"].get(phase, [])
        assert written or any(p.startswith(f"{phase}:") for p in saved["profile_problems"]), phase
        for path in written:
            with open(path) as f:
                assert json.load(f)["$schema"].startswith("https://www.speedscope.app/")
