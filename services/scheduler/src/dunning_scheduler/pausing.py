"""Resuming: when the last pause of an invoice ends, when its paused stages go. Pure functions, no I/O.

A stage is *owed* if its time passed during the pause. The policy's `pauses.resume` chooses:

- `spaced` (default): the next owed stage goes at the resume, and every paused stage after it keeps
  its original spacing (all move by the same amount), so a customer never gets a burst;
- `latest_only`: only the most escalated owed stage goes at the resume, the earlier owed ones are
  `skipped` (`owed_during_pause`), later ones keep their times;
- `all_at_once`: every owed stage at the resume (the behaviour before pauses had rules).

After a broken promise a `promise_broken` reminder goes at the resume first; the owed stages then
resume as above from one stage-gap later: the gap the policy puts between the first owed stage and
the stage before it (the first stage: the one after it), so the two never go together. A stage
never goes back before the resume instant.
Instalment and promise_broken reminders are not the policy's stages: an owed one goes at the resume,
the others keep their times.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

SPACED, LATEST_ONLY, ALL_AT_ONCE = "spaced", "latest_only", "all_at_once"
OWED_DURING_PAUSE = "owed_during_pause"


class Resumed(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    previous_scheduled_at: datetime
    scheduled_at: datetime | None  # None: skipped
    state: str  # scheduled | skipped
    reason: str | None


def resume(
    timers: Sequence[Mapping[str, Any]],
    *,
    mode: str,
    now: datetime,
    kinds: frozenset[str] = frozenset({"policy", "promise_broken", "instalment"}),
    after_broken_promise: bool = False,
) -> list[Resumed]:
    """The new time and state of each `paused` timer of `kinds` among `timers` (all the invoice's
    timer rows: stage_id, stage, sequence, channel, scheduled_at, state, kind), in plan order."""
    paused = sorted(
        (t for t in timers if t["state"] == "paused" and t["kind"] in kinds),
        key=lambda t: (t["sequence"], t["channel"]),
    )
    policy = [t for t in paused if t["kind"] == "policy"]
    owed = sorted({t["sequence"] for t in policy if t["scheduled_at"] <= now})
    start = now
    if owed and after_broken_promise:
        start = now + _gap_before(timers, owed[0])
    first_at = min((t["scheduled_at"] for t in policy if t["sequence"] == owed[0]), default=now) if owed else now
    result = []
    for t in paused:
        at, state, reason = t["scheduled_at"], "scheduled", None
        if t["kind"] != "policy":
            at = max(at, now)
        elif mode == SPACED:
            at = at + (start - first_at) if owed else at
        elif mode == LATEST_ONLY and owed and t["sequence"] < owed[-1]:
            at, state, reason = None, "skipped", OWED_DURING_PAUSE
        else:  # latest_only's latest owed stage, all_at_once's owed ones; the later ones keep their time
            at = max(at, start)
        if at is not None and t["kind"] == "policy":
            at = max(at, start)
        result.append(
            Resumed(t["stage_id"], t["stage"], t["sequence"], t["channel"], t["scheduled_at"], at, state, reason)
        )
    return result


def _gap_before(timers: Sequence[Mapping[str, Any]], sequence: int) -> timedelta:
    """The policy's spacing at stage `sequence`: its time minus the previous stage's (the first
    stage: the next one's time minus its own; a lone stage: none)."""
    times = {t["sequence"]: t["scheduled_at"] for t in timers if t["kind"] == "policy"}
    earlier = [s for s in times if s < sequence]
    if earlier:
        return max(times[sequence] - times[max(earlier)], timedelta(0))
    later = [s for s in times if s > sequence]
    return max(times[min(later)] - times[sequence], timedelta(0)) if later else timedelta(0)
