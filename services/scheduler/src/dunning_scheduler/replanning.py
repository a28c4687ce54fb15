"""Re-planning: from an invoice's timers and a fresh plan, what changes. Pure functions, no I/O.

The fresh plan is `planning.plan` (the planner's own rules, written once) for the invoice as it is
now, with `accepted_at` the moment of the change, so a new time already past is treated as at first
planning: all but the latest past stage are skipped ("past_at_planning"), the latest is scheduled at
the moment of the change. Then, matched by (stage, channel):

- **what was sent stays sent, and a reminder never goes back to an earlier tone:** every stage of the
  fresh plan up to the last one that fired (by name, in the fresh plan's order) keeps its timer
  exactly as it is;
- a live timer already due before the change (its time at or before `changed_at`: owed, and not yet
  fired only because firing lagged or waited for the gate) stays exactly as it is: the change can
  neither skip nor move a stage that was owed before it;
- after it, a scheduled timer follows the fresh plan and keeps its stage id (moved, or skipped if its
  new time is past and not the latest); a skipped timer, or one dropped by an earlier re-plan, that
  the fresh plan schedules comes back with its stage id; a (stage, channel) without a timer is
  added with the fresh plan's new stage id; a scheduled timer the fresh plan lacks is dropped
  (cancelled, with the re-plan's reason).

`Change.listed` says which changes StagesRescheduled lists: added, dropped, or a new time or state.
A `paused` timer (its invoice is on hold, disputed, promised or in a plan) is re-planned as a
scheduled one and stays paused; on a paused invoice a new or revived timer is paused too.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from dunning_scheduler.planning import PlannedTimer

DUE_DATE_CHANGED = "due_date_changed"
TIMEZONE_CHANGED = "timezone_changed"
CALENDAR_CHANGED = "calendar_changed"  # the customer moved to another country or subdivision
POLICY_APPLIED = "policy_applied"
LIVE = ("scheduled", "paused")  # still to be sent


class Change(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    previous_scheduled_at: datetime | None  # None: added (or back after it was dropped)
    scheduled_at: datetime | None  # None: dropped
    state: str  # scheduled | skipped | cancelled
    reason: str | None
    added: bool  # a new timer (insert), else an existing one changed (update)
    listed: bool  # in StagesRescheduled


def frozen_stages(timers: Sequence[Mapping[str, Any]], fresh: Sequence[PlannedTimer]) -> set[str]:
    """The fresh plan's stage names up to (and with) the last one that has fired."""
    fired = {t["stage"] for t in timers if t["state"] == "fired"}
    last = max((t.sequence for t in fresh if t.stage in fired), default=-1)
    return {t.stage for t in fresh if t.sequence <= last}


def replan(
    timers: Sequence[Mapping[str, Any]],
    fresh: Sequence[PlannedTimer],
    *,
    policy_version: int,
    reason: str,
    paused: bool = False,
    changed_at: datetime | None = None,
) -> list[Change]:
    """The changes that turn `timers` (an invoice's timer rows) into `fresh` (see the module's rules),
    in the fresh plan's order, dropped timers last. Nothing to do: []. `paused`: the invoice is.
    `changed_at`: when the change was accepted (live timers due by then are left alone)."""
    if paused:
        fresh = [t._replace(state="paused") if t.state == "scheduled" else t for t in fresh]
    frozen = frozen_stages(timers, fresh)
    by_key = {(t["stage"], t["channel"]): t for t in timers}
    changes: list[Change] = []
    for new in fresh:
        old = by_key.pop((new.stage, new.channel), None)
        if new.stage in frozen or (old is not None and old["state"] == "fired"):
            continue
        if old is None:
            changes.append(_change(new, new.stage_id, None, new.scheduled_at, added=True, listed=True))
            continue
        state = old["state"]
        if state in LIVE and changed_at is not None and old["scheduled_at"] <= changed_at:
            continue  # owed before the change: it stays as it is
        if state in LIVE:
            moved = new.state != state or new.scheduled_at != old["scheduled_at"]
            changes.append(_change(new, old["stage_id"], old["scheduled_at"], new.scheduled_at, listed=moved))
        elif new.state in LIVE:  # skipped, or dropped earlier: back in the plan, same stage id
            previous = old["scheduled_at"] if state == "skipped" else None
            changes.append(_change(new, old["stage_id"], previous, new.scheduled_at, listed=True))
        else:  # stays skipped or dropped; only what the policy calls it may change
            changes.append(
                Change(
                    old["stage_id"], new.stage, new.sequence, new.channel, new.template, old["scheduled_at"],
                    old["scheduled_at"], state, old["reason"], added=False, listed=False,
                )
            )  # fmt: skip
    for old in by_key.values():  # the fresh plan lacks them
        if old["state"] in LIVE:
            changes.append(
                Change(
                    old["stage_id"], old["stage"], old["sequence"], old["channel"], old["template"],
                    old["scheduled_at"], None, "cancelled", reason, added=False, listed=True,
                )
            )  # fmt: skip
    ids = {t["stage_id"]: t for t in timers}
    return [c for c in changes if c.listed or _differs(c, ids.get(c.stage_id), policy_version)]


def _change(
    new: PlannedTimer,
    stage_id: str,
    previous: datetime | None,
    scheduled_at: datetime,
    *,
    listed: bool,
    added: bool = False,
) -> Change:
    return Change(
        stage_id,
        new.stage,
        new.sequence,
        new.channel,
        new.template,
        previous,
        scheduled_at,
        new.state,
        new.reason,
        added,
        listed,
    )


def _differs(change: Change, old: Mapping[str, Any] | None, policy_version: int) -> bool:
    """An unlisted change still written: the new policy names the stage's template or order
    differently, or the timer is now planned with another policy version."""
    if old is None:
        return True
    return (change.sequence, change.template, change.reason, policy_version) != (
        old["sequence"],
        old["template"],
        old["reason"],
        old["policy_version"],
    )
