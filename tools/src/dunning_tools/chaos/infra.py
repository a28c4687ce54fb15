"""Infrastructure faults of a chaos run: PostgreSQL and the broker (Tansu) SIGKILLed and started again.

PostgreSQL is killed with every backend at once (its process group, as a crash of its host) and
recovers from its WAL; the run's PostgreSQL keeps synchronous commits (`crash_safe`), so what it
acknowledged survives. The broker keeps its topics, records and consumer offsets in the run's
object store (`durable_broker`), so what it acknowledged survives too. Each is down for `down_for`
seconds; the services see refused connections meanwhile and recover (or exit and are restarted by the
harness's supervisor, as an orchestrator would: such exits are reported as caused by the outage).
"""

import asyncio
import time

from dunning_tools.stack.procs import port_in_use

INFRA = ("postgres", "broker")


def plan(run) -> list[tuple[float, str]]:
    """(seconds after t0, target): each of INFRA once per `infra_every` seconds of the kill window,
    PostgreSQL first, spread evenly (at least one of each when infra faults are on)."""
    cfg = run.cfg
    if not cfg.infra_faults:
        return []
    lo, hi = cfg.kill_window
    count = max(1, int((hi - lo) // max(cfg.infra_every, 1.0)))
    slots = [lo + (hi - lo) * (k + 0.5) / (2 * count) for k in range(2 * count)]
    return [(at, INFRA[k % 2]) for k, at in enumerate(slots)]


async def inject(run) -> None:
    from dunning_tools.chaos.harness import Fault, sleep_until

    for at, target in plan(run):
        await sleep_until(run.t0 + at)
        fault = Fault("infra_kill", target, time.time())
        run.faults.append(fault)
        stack = run.stack
        server = stack.pg if target == "postgres" else stack.broker
        if server is None:
            run.notes.append(f"{target} is not ours (DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS set): not killed")
            return
        await asyncio.to_thread(server.kill)
        run.log(f"SIGKILL {target} (every process of it)")
        await asyncio.sleep(run.rng.uniform(*run.cfg.infra_down_for))
        try:
            await asyncio.to_thread(server.start)
        except Exception as exc:
            run.log(f"WARNING: {target} did not start again ({exc!r}); retrying")
            await asyncio.sleep(2)
            await asyncio.to_thread(server.start)
        fault.restarted_at = fault.end = time.time()
        port = stack.ports.postgres if target == "postgres" else stack.ports.kafka
        fault.detail = f"down {fault.end - fault.start:.1f} s, listening again: {port_in_use(port)}"
        run.log(f"{target} started again after {fault.end - fault.start:.1f} s")


def outage_of(run, at: float, margin: float = 30.0):
    """The infrastructure fault a process exit at `at` may be a consequence of (None: not near one)."""
    for f in run.faults:
        if f.kind == "infra_kill" and f.start - 1 <= at <= (f.end or at) + margin:
            return f
    return None


def summary(run) -> list[dict]:
    return [
        {
            "target": f.target,
            "killed_at_s": round(f.start - run.t0, 1),
            "down_s": round((f.end or f.start) - f.start, 1),
            "detail": f.detail,
        }
        for f in run.faults
        if f.kind == "infra_kill"
    ]
