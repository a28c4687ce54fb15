"""The cancel guarantee's argument, model-checked: hypothesis interleaves acknowledgements, commits,
relays, watermark statements, consumer lag, crashes, pauses and firing, and finds no stage sent after
a stop, none twice and none lost; switched to a wrong version of one step, it finds the violation."""

import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from .machine import GateModel
from .scheduler import StopOvertaken, Violation, WrongVerdict

pytestmark = pytest.mark.unit

_COMMON = dict(
    derandomize=True,
    database=None,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SOUND = settings(max_examples=500, stateful_step_count=100, **_COMMON)
# A mutant is searched for with runs of 100 steps, then (if those 1,000 runs miss it) of 120 and 80:
# each search is deterministic, but which runs one draws moves with anything that changes hypothesis's
# draws (its version, the rules), and a violation one length misses another finds.
MUTANT_STEPS = (100, 120, 80)
MUTANT = settings(max_examples=1000, stateful_step_count=100, phases=[Phase.generate], **_COMMON)


def test_no_stage_fires_after_a_stop_none_twice_none_lost() -> None:
    run_state_machine_as_test(GateModel, settings=SOUND)


@pytest.mark.parametrize(
    ("mutants", "violation"),
    [
        pytest.param({"gate_off"}, StopOvertaken, id="gate off"),
        pytest.param({"payments_gate_only"}, StopOvertaken, id="gate of reconciliation only"),
        pytest.param({"fence_skipped"}, StopOvertaken, id="fence skipped"),
        pytest.param({"clock_before_fence"}, StopOvertaken, id="clock read before the fence"),
        pytest.param({"outbox_unbounded"}, StopOvertaken, id="W not bounded by the oldest waiting row"),
        pytest.param({"positions_unchecked"}, StopOvertaken, id="statement used before its offsets are applied"),
        pytest.param({"deadline_ungated"}, WrongVerdict, id="deadline judged without the gate"),
        pytest.param({"resume_early", "fire_ignores_pauses"}, StopOvertaken, id="resume under another pause"),
        pytest.param({"plan_under_hold", "fire_ignores_pauses"}, StopOvertaken, id="planned under a customer hold"),
        pytest.param({"promise_paid_from_apply"}, WrongVerdict, id="today's promise misses earlier-applied payments"),
    ],
)
def test_the_model_finds_the_mutant(mutants: set[str], violation: type[Violation]) -> None:
    machine = type("GateModelMutant", (GateModel,), {"mutants": frozenset(mutants)})
    started = time.monotonic()
    for steps in MUTANT_STEPS:
        try:
            run_state_machine_as_test(machine, settings=settings(MUTANT, stateful_step_count=steps))
        except Violation as found:  # the named one, or another the mutant also causes: it is caught either way
            kind = type(found).__name__
            print(f"{sorted(mutants)}: {kind} found in {time.monotonic() - started:.1f} s (runs of {steps} steps)")
            return
    pytest.fail(
        f"{sorted(mutants)}: no violation ({violation.__name__} expected) in 1,000 runs of each of {MUTANT_STEPS} steps"
    )


@pytest.mark.parametrize(
    ("mutants", "raises"),
    [
        pytest.param(frozenset(), None, id="a settle sticks"),
        pytest.param(frozenset({"stale_settle_dropped"}), StopOvertaken, id="today's apply_payment"),
    ],
)
def test_two_payments_racing_on_one_invoice(mutants: frozenset[str], raises: type[Violation] | None) -> None:
    """The interleaving the search needs ~1,000 runs for, spelled out: payment 1 joins the fence first
    (acknowledged at A1), payment 2 joins it (A2 > A1), takes the invoice lock and commits a partial
    payment; payment 1 then settles the invoice, acknowledged at A1 < A2. The scheduler applies them in
    outbox order (A2, then A1); today's rule skips an acknowledgement older than the last applied, so
    the invoice is never settled and its later stages fire after it was paid."""
    machine = type("GateModelScenario", (GateModel,), {"mutants": mutants})()
    world = machine.world
    first = world.begin("payment", {"invoice": "i1", "amount": 2})
    world.acknowledge_time(first)
    second = world.begin("payment", {"invoice": "i1", "amount": 1})
    world.acknowledge_time(second)
    for txn in (second, first):
        assert world.write(txn)
        world.commit(txn)
    assert [p.settled for p in world.payments] == [False, True]
    machine.relay_everything("reconciliation")
    if raises is None:
        machine.teardown()
        assert machine.scheduler.invoices["i1"].settled
    else:
        with pytest.raises(raises):
            machine.teardown()
