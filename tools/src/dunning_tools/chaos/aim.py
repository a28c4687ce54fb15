"""Aiming a stop at a stage time: each kind of stop is sent early by the acknowledgement latency last
observed for that kind (request sent -> the acknowledged_at its service answers), learnt online,
and the share that landed within +-50 ms of the stage time is reported per kind.

The latency differs per kind (a Stripe webhook verifies a signature and reads the invoice first, a
hold resolves a customer, a payment plan checks its instalments) and with the load, so one figure
for all misses; a per-kind median of the recent first attempts follows both. The lead is read a
second before sending (`Aim.wait`), not when the stop is planned (up to half a minute earlier, at
another load).
"""

import asyncio
import statistics
import time
from collections import defaultdict, deque

AIM_MS = 25.0  # aimed within +-25 ms of the stage time, so that the latency's noise stays inside +-50 ms
MIN_SHARE = 0.8  # a run fails if a kind's share of acknowledgements within +-50 ms is below this
MIN_SAMPLES = 5  # kinds with fewer acknowledged stops are reported, not judged


class Aim:
    def __init__(self, first_guess: float = 0.02, recent_s: float = 15.0):
        self.recent_s = recent_s
        self.leads: dict[str, deque[tuple[float, float]]] = defaultdict(lambda: deque([(0.0, first_guess)], maxlen=15))

    def lead(self, kind: str) -> float:
        """The median latency of the kind's first attempts of the last `recent_s` seconds (at least
        its last three: the load changes within a run, and so does the latency)."""
        samples = self.leads[kind]
        since = time.time() - self.recent_s
        recent = [lat for at, lat in samples if at >= since] or [lat for _, lat in list(samples)[-3:]]
        if len(recent) < 3:
            recent = [lat for _, lat in list(samples)[-3:]]
        return statistics.median(recent)

    def learn(self, kind: str, sent_at: float, acknowledged_at: float) -> None:
        """A first attempt's latency (retries measure the faults, not the service)."""
        self.leads[kind].append((acknowledged_at, min(max(acknowledged_at - sent_at, 0.0), 2.0)))

    async def wait(self, kind: str, target: float) -> None:
        """Sleep until `target` less the kind's lead as it is a second before sending."""
        for margin in (1.0, 0.0):
            delay = target - self.lead(kind) - margin - time.time()
            if delay > 0:
                await asyncio.sleep(delay)


def shares(stops, stage_time, race_ms: float) -> dict[str, dict]:
    """Per kind: stops acknowledged, how many within +-race_ms of their stage's time, the share, and the
    offsets' spread (ms); `stage_time(stop)` is the scheduled time of the stage the stop was aimed at."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for s in stops:
        at = stage_time(s)
        if s.acknowledged_at is not None and at is not None and s.raced:
            by_kind[s.via].append((s.acknowledged_at - at) * 1000)
    out = {}
    for kind, offsets in sorted(by_kind.items()):
        within = sum(abs(o) <= race_ms for o in offsets)
        ordered = sorted(offsets)
        out[kind] = {
            "acknowledged": len(offsets),
            "within": within,
            "share": round(within / len(offsets), 3),
            "p50_ms": round(ordered[len(ordered) // 2], 1),
            "p5_ms": round(ordered[int(0.05 * (len(ordered) - 1))], 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        }
    return out


def below(share_by_kind: dict[str, dict]) -> list[str]:
    """The kinds whose share is under MIN_SHARE (with enough samples to judge)."""
    return [k for k, v in share_by_kind.items() if v["acknowledged"] >= MIN_SAMPLES and v["share"] < MIN_SHARE]
