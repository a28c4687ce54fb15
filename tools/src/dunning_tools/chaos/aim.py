"""Aiming a stop at a stage time: each kind of stop is sent early by the acknowledgement latency last
observed for that kind (request sent -> the acknowledged_at its service answers), learnt online,
and the share that landed within +-50 ms of the stage time is reported per kind.

The latency differs a little per kind (a Stripe webhook verifies a signature and reads the invoice
first, a hold resolves a customer) and a lot with the load (after a service is killed and restarted,
for seconds); the lead follows the load (`Aim`). It is read a second before sending (`Aim.wait`),
not when the stop is planned (up to half a minute earlier, at another load).
"""

import asyncio
import statistics
import time
from collections import defaultdict, deque

AIM_MS = 25.0  # aimed within +-25 ms of the stage time, so that the latency's noise stays inside +-50 ms
MIN_SHARE = 0.8  # a run fails if a kind's share of acknowledgements within +-50 ms is below this
MIN_SAMPLES = 5  # kinds with fewer acknowledged stops are reported, not judged


class Aim:
    """The lead of a stop: the median latency of the last few first attempts of any kind (the
    stack's load now), plus the kind's own usual difference from it (its residual: a payment to
    reconciliation or a hand-off to the notifier takes a little longer than a hold at invoice-ingest);
    its kind's own median until there are enough. Replayed over seven short runs' stops, the any-kind
    median kept more of them within +-50 ms than a per-kind median (0.79 vs 0.72 on average; the same
    on calm runs, far better on runs with a latency spike after a kill, which a per-kind median trails
    by its whole window). The residual took out the policy races' bias (their offsets' median +15 to
    +22 ms in the full run, where a cap race fell to 77 %)."""

    def __init__(self, judged: bool = True, first_guess: float = 0.02, recent: int = 5):
        # Whether a kind under MIN_SHARE fails the run (the config's judge_aim). `make chaos` judges
        # it; the short run in `make test` reports it (tests never assert timings, and on two cores a
        # service killed and restarted lifts the acknowledgement latency to 100-900 ms for seconds, so
        # stops sent then land late whatever the aim; outside those windows over 90 % land within +-50 ms).
        self.judged = judged
        self.leads: dict[str, deque[float]] = defaultdict(lambda: deque([first_guess], maxlen=15))
        self.last: deque[float] = deque(maxlen=recent)  # any kind's
        self.residuals: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=9))  # kind's - any kind's

    def lead(self, kind: str) -> float:
        if len(self.last) == self.last.maxlen:
            residual = statistics.median(self.residuals[kind]) if self.residuals[kind] else 0.0
            return max(statistics.median(self.last) + residual, 0.0)
        return statistics.median(self.leads[kind])

    def learn(self, kind: str, sent_at: float, acknowledged_at: float) -> None:
        """A first attempt's latency (retries measure the faults, not the service)."""
        latency = min(max(acknowledged_at - sent_at, 0.0), 2.0)
        if len(self.last) == self.last.maxlen:
            self.residuals[kind].append(latency - statistics.median(self.last))
        self.leads[kind].append(latency)
        self.last.append(latency)

    def verdict(self, share_by_kind: dict[str, dict]) -> dict:
        """The report's fields on the aim: the kinds under MIN_SHARE, and whether they fail the run."""
        return {"kinds_below_share": below(share_by_kind), "aim_judged": self.judged}

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


def failing(report: dict) -> bool:
    """Whether the report's aim fails its run (see Aim.verdict)."""
    return bool(report["kinds_below_share"]) and report["aim_judged"]


def below_note(report: dict) -> str:
    """Printed after a report's shares: the kinds under MIN_SHARE, if any, and whether they count."""
    if not report["kinds_below_share"]:
        return ""
    judged = "" if report["aim_judged"] else " (reported, not judged: the short run)"
    return f"; BELOW 80 %: {report['kinds_below_share']}{judged}"
