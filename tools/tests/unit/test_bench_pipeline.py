"""The whole-pipeline bench's verdicts on a step: what counts as lost, twice, or sent after a stop;
the CPU per group between two samples; the mix; a py-spy profile's top functions."""

import json
from types import SimpleNamespace

import pytest

from dunning_tools.bench import pipeline_load as pl
from dunning_tools.bench.pipeline import marginal, top_frames
from dunning_tools.bench.pipeline_verdict import judge, passed

pytestmark = pytest.mark.unit

T0 = 1_000_000.0  # the window: T0 .. T0 + 10


def _judge(kind: str, acknowledged: float | None, arrived: list[tuple[float, float]]) -> dict:
    lane = pl.Lane("email", 1.0, {"tenant_id": "ten_1", "api_key": "k"})
    load = SimpleNamespace(issued=[pl.Issued(lane, "inv_1", {}, T0, kind, acknowledged)])
    got = [pl.Arrival("ten_1", "inv_1", at, scheduled) for at, scheduled in arrived]
    s0, s1 = pl.CpuSample(T0), pl.CpuSample(T0 + 10)
    return judge([lane], 5, 1.0, load, got, {}, s0, s1, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "acknowledged", "arrived", "lost", "twice", "after_stop", "late"),
    [
        pytest.param("remind", None, [(T0 + 5.2, T0 + 5)], 0, 0, 0, 0, id="a reminder delivered"),
        pytest.param("remind", None, [], 1, 0, 0, 0, id="a reminder never delivered is lost"),
        pytest.param("remind", None, [(T0 + 5.2, T0 + 5), (T0 + 6, T0 + 5)], 0, 1, 0, 0, id="delivered twice"),
        pytest.param("pay", T0 + 4, [], 0, 0, 0, 0, id="paid before its stage: nothing sent"),
        pytest.param("pay", T0 + 4, [(T0 + 5.2, T0 + 5)], 0, 0, 1, 0, id="paid before its stage, sent anyway"),
        pytest.param("hold", T0 + 6, [(T0 + 5.2, T0 + 5)], 0, 0, 0, 1, id="held after the stage was due"),
    ],
)
def test_a_step_counts_lost_twice_and_sent_after_a_stop(kind, acknowledged, arrived, lost, twice, after_stop, late):
    step = _judge(kind, acknowledged, arrived)
    assert (step["lost"], step["duplicates"], step["sent_after_stop"]) == (lost, twice, after_stop)
    assert step["stops"]["after_the_stage_was_due"] == late


def test_lateness_is_delivered_minus_due_for_the_stages_due_in_the_window():
    step = _judge("remind", None, [(T0 + 5.25, T0 + 5)])
    assert step["lateness_ms"]["p99"] == 250.0 and step["achieved_reminders_per_s"] == 0.1
    step = _judge("remind", None, [(T0 + 12, T0 + 11)])  # due after the window: not in its lateness
    assert step["lateness_ms"] == {"n": 0}


def test_a_step_passes_only_on_time_complete_and_at_the_rate_offered():
    good = {
        "aborted": None,
        "lateness_ms": {"n": 10, "p99": 1900.0},
        "achieved_reminders_per_s": 95,
        "offered_reminders_per_s": 100,
        "lost": 0,
        "sent_after_stop": 0,
    }
    assert passed(good)
    assert not passed({**good, "lateness_ms": {"n": 10, "p99": 2100.0}})
    assert not passed({**good, "achieved_reminders_per_s": 80})
    assert not passed({**good, "lost": 1})
    assert not passed({**good, "aborted": "300 reminders behind"})


def test_cpu_per_group_sums_the_services_and_leaves_the_stand_ins_out():
    s0 = pl.CpuSample(100.0, {1: ("notifier", 5.0), 2: ("postgresql", 1.0), 3: ("stand-ins", 1.0)})
    s1 = pl.CpuSample(
        102.0,
        {
            1: ("notifier", 6.0),
            2: ("postgresql", 2.0),
            3: ("stand-ins", 9.0),
            4: ("postgresql", 0.5),  # a backend started in the window
            5: ("scheduler", 1.0),
        },
    )
    cores = pl.cpu_cores(s0, s1)
    assert cores["notifier"] == 0.5 and cores["scheduler"] == 0.5 and cores["services"] == 1.0
    assert cores["postgresql"] == 0.75 and cores["broker"] == 0.0 and "stand-ins" not in cores


def test_the_mix_is_normalised():
    assert pl.parse_mix("email=3, sms=1,letter=0") == {"email": 0.75, "sms": 0.25}


def test_a_profiles_top_functions_are_its_leaves_by_samples(tmp_path):
    path = tmp_path / "p.json"
    frames = [{"name": n, "file": f"/x/{n}.py", "line": 1} for n in ("main", "send", "render")]
    profile = {"type": "sampled", "samples": [[0, 1], [0, 2], [0, 1]], "weights": [1, 1, 1]}
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": [profile]}))
    assert top_frames(path) == [("send (send.py:1)", 66.7), ("render (render.py:1)", 33.3)]


def test_the_marginal_cost_is_the_extra_cpu_per_extra_reminder_between_the_two_best_steps():
    def step(rate: float, cores: float, p99: float = 500.0) -> dict:
        return {
            "aborted": None,
            "lateness_ms": {"n": 10, "p99": p99},
            "offered_reminders_per_s": rate,
            "achieved_reminders_per_s": rate,
            "lost": 0,
            "sent_after_stop": 0,
            "cpu_cores": {"services": cores / 2, "postgresql": cores / 4, "broker": cores / 4, "notifier": 9.0},
        }

    steps = [step(25, 0.8), step(50, 1.3), step(100, 1.9, p99=5000.0)]  # the last one did not hold
    assert marginal(steps) == 20.0  # 0.5 cores more for 25 reminders/s more
    assert marginal(steps[:1]) is None
