"""The statements bench, quick: it imports its statement and saves its figure with each run's rate
as a round and the CPU seconds beside it (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_statements_bench_saves_lines_per_second_with_its_rounds(infra, tmp_path):
    env = {**os.environ, "DATABASE_URL": infra.database_url, "BENCH_RUN_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "dunning_tools.bench.statements", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "statement lines matched per second" in done.stdout
    assert "import answered: {'lines': 2000, 'credits': 2000" in done.stdout
    saved = json.loads((tmp_path / "bench-statements.json").read_text())
    figure = saved["figures"]["lines_per_s"]
    assert figure["unit"] == "lines/s" and len(figure["rounds"]) == 1 and figure["median"] > 0
    assert saved["cpu"]["lines"] == 2000 and len(saved["cpu"]["python_s"]) == 1
