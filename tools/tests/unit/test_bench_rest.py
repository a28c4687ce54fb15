"""The bench's grouping of the stack's processes, and its CPU and memory readings of real processes."""

import subprocess
import sys

import pytest

from dunning_tools.bench import rest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        (["/venv/bin/python", "-m", "dunning_ingest"], "invoice-ingest"),
        (["/venv/bin/python", "-m", "dunning_notifier"], "notifier"),
        (["postgres: postgres dunning 127.0.0.1(56860) idle"], "postgresql"),
        (["/pg/bin/postgres", "-D", "/run/pgdata"], "postgresql"),
        (["tansu-v0.6.0", "broker"], "broker"),
        (["python", "-m", "dunning_tools.stack.objectstore", "--dir", "x"], "broker"),
        (["python", "-m", "dunning_tools.stack.mailserver"], "stand-ins"),
        (["python", "-m", "dunning_tools.stack.providers.app"], "stand-ins"),
        (["/venv/bin/py-spy", "record", "--pid", "42"], "profiler"),
        (["python", "-m", "dunning_tools.bench.bare_api"], "reference"),
        (["sleep", "1"], "other"),
    ],
)
def test_each_process_is_grouped_by_what_it_is(cmdline, group):
    assert rest.group_of(cmdline) == group


def test_a_busy_child_shows_its_cpu_and_an_idle_one_almost_none():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen(["sleep", "30"])
    try:
        reading = rest.cpu_at_rest(1.0)
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    # the busy loop (the sleeping child adds ~0); a few % only on a machine shared with other work
    assert reading["by_group_pct"]["other"] > 5
    assert reading["total_pct_of_a_core"] == pytest.approx(sum(reading["by_group_pct"].values()), abs=0.05)
