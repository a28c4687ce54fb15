"""The loop base (dunning.loops): stop, wake, backoff and drain, with scripted steps and no clock asserts."""

import asyncio
import random

import pytest

from dunning.loops import Backoff, Housekeeping, Loop

pytestmark = pytest.mark.unit
FOREVER = 3600.0  # a wait no test sits through: only wake() or stop() can end it
SAFETY = 10.0  # an upper bound so a broken loop fails the test instead of hanging it


class Scripted(Loop):
    """Each step takes the next action of its script: a delay to return, an exception to raise,
    "stop" (call stop() inside the step), or "block" (wait until released)."""

    name = "scripted"

    def __init__(self, script, *, idle_seconds=FOREVER, backoff=None):
        super().__init__(idle_seconds=idle_seconds, backoff=backoff or Backoff(initial=0.001, maximum=0.002))
        self.script = list(script)
        self.log: list[str] = []
        self.stepped = asyncio.Event()
        self.release = asyncio.Event()
        self.errors_seen: list[str] = []

    async def step(self):
        action = self.script.pop(0) if self.script else FOREVER
        self.log.append(f"step:{action if not isinstance(action, Exception) else type(action).__name__}")
        self.stepped.set()
        if action == "stop":
            self.stop()
            return 0
        if action == "block":
            await self.release.wait()
            self.log.append("step:finished")
            return FOREVER
        if isinstance(action, Exception):
            raise action
        return action

    async def drain(self):
        self.log.append("drain")

    async def teardown(self):
        self.log.append("teardown")

    def on_error(self, exc, retry_in):
        self.errors_seen.append(repr(exc))


async def _until(predicate):
    async def poll():
        while not predicate():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout=SAFETY)


@pytest.mark.parametrize(
    ("script", "expected_steps", "expected_errors"),
    [
        pytest.param(["stop"], 1, 0, id="stop inside the first step: one step, then drain"),
        pytest.param([0, 0, 0, "stop"], 4, 0, id="a step returning 0 goes again at once"),
        pytest.param([ValueError("x"), OSError("y"), "stop"], 3, 2, id="failed steps are retried after a backoff"),
        pytest.param([None, "stop"], 2, 0, id="None waits the idle interval (here short)"),
    ],
)
async def test_the_loop_runs_its_script_then_drains_once(script, expected_steps, expected_errors):
    loop = Scripted(script, idle_seconds=0.001)
    await asyncio.wait_for(loop.run(), timeout=SAFETY)
    assert [e for e in loop.log if e.startswith("step:")] == loop.log[:expected_steps]
    assert len(loop.log) == expected_steps + 2 and loop.log[-2:] == ["drain", "teardown"]
    assert (loop.errors, len(loop.errors_seen)) == (expected_errors, expected_errors)
    assert loop.steps == expected_steps - expected_errors
    assert loop.backoff.failures == 0  # the last step succeeded: reset


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("wake", id="wake() ends a long wait"),
        pytest.param("stop", id="stop() ends a long wait and drains"),
    ],
)
async def test_a_long_wait_ends_on_wake_or_stop(how):
    loop = Scripted([FOREVER, "stop"])
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(loop.log) == 1)  # the first step returned FOREVER: the loop waits
    getattr(loop, how)()
    await asyncio.wait_for(task, timeout=SAFETY)
    expected = (
        ["step:3600.0", "step:stop", "drain", "teardown"] if how == "wake" else ["step:3600.0", "drain", "teardown"]
    )
    assert loop.log == expected


async def test_a_wake_during_a_step_is_kept():
    loop = Scripted(["block", "stop"])
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.stepped.wait(), timeout=SAFETY)
    loop.wake()  # arrives while the step runs; the step then asks for a long wait
    loop.release.set()
    await asyncio.wait_for(task, timeout=SAFETY)
    assert loop.log == ["step:block", "step:finished", "step:stop", "drain", "teardown"]


async def test_stop_lets_the_step_in_flight_finish_before_the_drain():
    loop = Scripted(["block"])
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.stepped.wait(), timeout=SAFETY)
    loop.stop()  # as the runtime does on SIGTERM
    await asyncio.sleep(0)
    assert not task.done()  # the step is not cancelled
    loop.release.set()
    await asyncio.wait_for(task, timeout=SAFETY)
    assert loop.log == ["step:block", "step:finished", "drain", "teardown"]


async def test_a_paused_loop_takes_no_step_until_resumed():
    loop = Scripted(["stop"], idle_seconds=FOREVER)
    loop.paused = True
    task = asyncio.create_task(loop.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert loop.log == []
    loop.paused = False
    loop.wake()
    await asyncio.wait_for(task, timeout=SAFETY)
    assert loop.log == ["step:stop", "drain", "teardown"]


async def test_teardown_runs_when_the_task_is_cancelled():
    loop = Scripted(["block"])
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.stepped.wait(), timeout=SAFETY)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.log == ["step:block", "teardown"]


@pytest.mark.parametrize(
    ("backoff", "failures", "low", "high"),
    [
        pytest.param(Backoff(initial=0.1, maximum=5.0, jitter=0.2), 1, 0.08, 0.12, id="first failure: about initial"),
        pytest.param(Backoff(initial=0.1, maximum=5.0, jitter=0.2), 3, 0.32, 0.48, id="third: initial * 4"),
        pytest.param(Backoff(initial=0.1, maximum=5.0, jitter=0.2), 20, 4.0, 6.0, id="capped at maximum"),
        pytest.param(Backoff(initial=1.0, maximum=1.0, jitter=0.0), 7, 1.0, 1.0, id="no jitter, fixed"),
        pytest.param(Backoff(initial=0.5, maximum=60.0, factor=3.0, jitter=0.1), 3, 4.05, 4.95, id="factor 3"),
    ],
)
def test_backoff_delays_stay_within_their_bounds(backoff, failures, low, high):
    assert backoff.bounds(failures) == pytest.approx((low, high))
    for seed in range(50):
        trial = Backoff(
            initial=backoff.initial,
            maximum=backoff.maximum,
            factor=backoff.factor,
            jitter=backoff.jitter,
            rng=random.Random(seed),
        )
        delays = [trial.next() for _ in range(failures)]
        assert low - 1e-9 <= delays[-1] <= high + 1e-9


def test_backoff_jitter_spreads_replicas_and_reset_starts_over():
    delays = {Backoff(rng=random.Random(seed)).next() for seed in range(20)}
    assert len(delays) > 1  # replicas that failed together do not retry together
    backoff = Backoff(initial=0.1, maximum=5.0)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert 0.08 <= backoff.next() <= 0.12


async def test_housekeeping_runs_every_chore_even_when_one_fails():
    ran: list[str] = []

    def chore(name, result):
        async def run():
            ran.append(name)
            if isinstance(result, Exception):
                raise result
            return result

        return run

    housekeeping = Housekeeping(pool=None, interval_seconds=FOREVER)  # type: ignore[arg-type]
    housekeeping.chores = [("a", chore("a", 3)), ("b", chore("b", OSError("db down"))), ("c", chore("c", 0))]
    with pytest.raises(RuntimeError, match="b"):
        await housekeeping.step()
    assert ran == ["a", "b", "c"]
    assert [name for name, _ in Housekeeping(pool=None).chores] == ["inbox"]  # type: ignore[arg-type]
