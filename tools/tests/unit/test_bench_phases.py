"""The bench's CPU per phase (processes started or gone in between) and its py-spy profiles."""

import asyncio
import json
import subprocess
import sys

import pytest

from dunning_tools.bench import phases, rest

pytestmark = pytest.mark.unit


def test_a_process_started_in_the_phase_counts_whole_and_one_gone_not_at_all():
    before = {1: ("scheduler", 10.0), 2: ("notifier", 5.0)}
    after = {1: ("scheduler", 12.5), 3: ("scheduler", 1.5)}  # 2 exited, 3 started (a restart)
    assert rest.cpu_by_group(before, after) == {"scheduler": 4.0}


def test_the_busiest_are_python_processes_a_new_one_included():
    before = {1: ("postgresql", 0.0), 2: ("invoice-ingest", 1.0), 3: ("notifier", 1.0)}
    after = {1: ("postgresql", 9.0), 2: ("invoice-ingest", 1.2), 3: ("notifier", 1.0), 4: ("scheduler", 2.0)}
    assert phases.busiest(before, after) == [4, 2]  # not PostgreSQL (no Python stacks); idle 3 not at all


def test_replicas_are_numbered_in_the_profile_names():
    labels = phases._labels({10: ("invoice-ingest", 0.0), 11: ("invoice-ingest", 0.0), 12: ("scheduler", 0.0)})
    assert labels == {10: "invoice-ingest-0", 11: "invoice-ingest-1", 12: "scheduler"}


@pytest.mark.skipif(phases.py_spy() is None, reason="py-spy is not installed")
def test_a_phase_profiles_its_busiest_child_until_it_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(rest, "group_of", lambda cmdline: "notifier" if "while" in " ".join(cmdline) else "other")
    busy = subprocess.Popen([sys.executable, "-c", "while True: sum(range(1000))"])
    recorder = phases.Phases(tmp_path)

    async def one_phase():
        async with recorder.phase("deliver", profile=True):
            await asyncio.sleep(2.0)

    try:
        asyncio.run(one_phase())
    finally:
        busy.kill()
        busy.wait()
    assert recorder.problems == []  # root may attach; elsewhere py-spy says why, and the phase goes on
    (written,) = recorder.profiles["deliver"]
    assert written.endswith("deliver-notifier.json")
    with open(written) as f:
        assert json.load(f)["profiles"]
    report = recorder.report()["deliver"]
    assert report["rounds"] == 1 and report["cpu_s"]["notifier"] > 0


def test_a_profiler_that_cannot_attach_says_why_and_the_phase_goes_on(tmp_path):
    profiler = phases.Profiler(tmp_path, "bulk")
    profiler.attach([(2**22 + 12345, "ghost")])  # no such process
    profiler.stop()
    assert profiler.written == []
    assert profiler.problems and "bulk-ghost.json" in profiler.problems[0]
