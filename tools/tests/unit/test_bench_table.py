"""Issue 13's table is built from the sub-benches' saved figures, and regenerates the README block."""

import os

import pytest

from dunning_tools.bench import figures, table
from dunning_tools.bench.figures import Figure

pytestmark = pytest.mark.unit


def _save(tmp_path, monkeypatch, bench: str, figs: dict[str, Figure]) -> None:
    monkeypatch.setattr(figures, "RUN_DIR", tmp_path)
    figures.save(bench, figs)


def test_a_figure_is_the_median_of_its_rounds_with_the_spread():
    fig = Figure("x", "/s", [3.0, 1.0, 2.0])
    assert fig.median == 2.0
    assert fig.spread == (1.0, 3.0)
    assert Figure("x", "/s").median is None


def test_rows_compare_with_the_reference_from_the_same_run(tmp_path, monkeypatch):
    _save(tmp_path, monkeypatch, "peers", {"pgqueuer_execute_per_s": Figure("p", "/s", [1000, 1200, 1100])})
    _save(tmp_path, monkeypatch, "pipeline", {"reminders_per_s": Figure("r", "/s", [800, 900, 850])})
    _save(tmp_path, monkeypatch, "system", {"at_rest_cpu_pct": Figure("c", "%", [5.0])})
    rows = {r[0]: r for r in table.table_rows(figures.load_all(tmp_path))}
    first = rows[table.ROWS[0].what]
    assert first[3] == f"{850 / 1100:.2f}x"
    assert first[5] == "yes"  # 0.77 >= 0.75
    assert rows["stack CPU at rest (% of one core)"][5] == "no"  # 5 % > 3 %
    assert rows["bulk import (invoices/s)"][5] == "missing"


def test_the_readme_block_is_rewritten_between_its_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{table.BEGIN}\nold figures\n{table.END}\n\nafter\n")
    table.rewrite_readme(readme, "new figures")
    assert readme.read_text() == f"# Title\n\n{table.BEGIN}\nnew figures\n{table.END}\n\nafter\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit):
        table.rewrite_readme(readme, "x")


def test_the_block_names_the_sizes_the_run_was_set_to_and_no_path(monkeypatch):
    for name in [k for k in os.environ if k.startswith("BENCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BENCH_ROUNDS", "2")
    monkeypatch.setenv("BENCH_ESCALATE", "10000")
    monkeypatch.setenv("BENCH_RUN_DIR", "/somewhere/.run")
    header = table.markdown({}, "2026-12-02 05:23 UTC", "abc1234").splitlines()[0]
    assert "cores; BENCH_ESCALATE=10000; BENCH_ROUNDS=2)" in header
    assert "somewhere" not in header
