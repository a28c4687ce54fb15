"""E2E scenarios that mostly wait (for stages seconds apart) run at once, each reported by its own test.

A module registers its scenarios (`@scenarios`), a module-scoped fixture runs them all in threads on one
stack (`scenarios.run(stack)`: each makes its own tenant, so none sees another's mail or invoices), and
each test re-raises its scenario's failure (`outcomes.check(name)`), traceback and all. Waiting in
parallel turns a module of six 20-second stories into one of about 25 seconds.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Scenario = Callable[..., None]


class Outcomes:
    def __init__(self, failures: dict[str, BaseException | None]):
        self.failures = failures

    def check(self, name: str) -> None:
        """Passes if scenario `name` ran to its end; raises what it raised otherwise."""
        if name not in self.failures:
            raise KeyError(f"no scenario {name!r}: {sorted(self.failures)}")
        failure = self.failures[name]
        if failure is not None:
            raise failure


class Scenarios:
    def __init__(self) -> None:
        self.registered: dict[str, Scenario] = {}

    def __call__(self, fn: Scenario) -> Scenario:
        self.registered[fn.__name__] = fn
        return fn

    def run(self, *args: Any) -> Outcomes:
        """Every scenario at once, each called with `args`; returns once all have ended."""

        def attempt(fn: Scenario) -> BaseException | None:
            try:
                fn(*args)
            except BaseException as exc:  # kept for the test that reports it
                return exc
            return None

        with ThreadPoolExecutor(max_workers=len(self.registered) or 1) as pool:
            futures = {name: pool.submit(attempt, fn) for name, fn in self.registered.items()}
            return Outcomes({name: future.result() for name, future in futures.items()})
