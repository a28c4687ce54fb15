"""The firing rules, pure: what happens to a customer's due stages at `now` under the tenant's settings.

`decide` looks at one customer's due timers (already past the gate) and answers, in order:
1. outside the customer's send window (its override, else the tenant's; openings on working days
   only) -> every one is deferred to the next opening plus the customer's spread offset;
2. the contact cap (at most `max_reminders` contacts in the rolling `period`) or the quiet period
   (none within `quiet_period` of the last contact) -> deferred to when it allows one again (placed
   in the window);
3. otherwise they fire: with consolidation all together, one notice per channel (one contact); without,
   each (invoice, stage) is one contact (its channels together), checked against the cap one by one.

A contact is one moment the customer is reached: every channel of the stages fired together counts
once. `simulate` runs `decide` forward in time over planned timers, as the firing loop would (the
preview's answer is what firing later does): it uses the same `consolidation_horizon` to pull a
customer's later stages into a notice as firing does.
"""

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dunning_scheduler.calendars import WorkingCalendar
from dunning_scheduler.tenant_settings import TenantSettings
from dunning_scheduler.windows import SendWindow

MAX_SIMULATED_STEPS = 10_000


@dataclass(frozen=True)
class Due:
    stage_id: str
    invoice_id: str
    customer_id: str
    stage: str
    sequence: int
    channel: str
    scheduled_at: datetime


@dataclass
class ContactLog:
    instants: list[datetime] = field(default_factory=list)  # the customer's past contacts, oldest first


@dataclass(frozen=True)
class Decision:
    kind: str  # fire | defer
    due: tuple[Due, ...]
    at: datetime  # fire: now; defer: the new scheduled time
    reason: str | None  # defer: send_window | contact_cap | quiet_period
    detail: str | None  # defer: in words
    notice: bool  # fire: these go as one consolidated notice (one per channel)


def _stamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hold(
    now: datetime, settings: TenantSettings, zone: ZoneInfo, contacts: Sequence[datetime]
) -> tuple[datetime, str, str] | None:
    """When the caps or the quiet period hold contacts back at `now`: (until, reason, words); else None."""
    caps = settings.caps
    if caps is None:
        return None
    if caps.max_reminders is not None and caps.period is not None:
        recent = [c for c in contacts if c <= now and caps.period.add_to(c.astimezone(zone)) > now]
        if len(recent) >= caps.max_reminders:
            leaves = caps.period.add_to(recent[-caps.max_reminders].astimezone(zone))
            words = (
                f"at most {caps.max_reminders} reminder{'s' if caps.max_reminders != 1 else ''} per"
                f" {_duration_text(settings, 'period')}: {len(recent)} sent since {_stamp(recent[0])}"
            )
            return leaves, "contact_cap", words
    if caps.quiet_period is not None and contacts:
        last = max(contacts)
        until = caps.quiet_period.add_to(last.astimezone(zone))
        if until > now:
            words = f"quiet period {_duration_text(settings, 'quiet_period')} after the contact at {_stamp(last)}"
            return until, "quiet_period", words
    return None


def _duration_text(settings: TenantSettings, key: str) -> str:
    caps = (settings.document or {}).get("contact_caps") or {}
    return str(caps.get(key) or key)


def _groups(due: Iterable[Due]) -> list[tuple[Due, ...]]:
    """(invoice, stage) groups, earliest first: each one contact without consolidation."""
    groups: dict[tuple[str, int], list[Due]] = {}
    for d in sorted(due, key=lambda d: (d.scheduled_at, d.invoice_id, d.sequence, d.channel)):
        groups.setdefault((d.invoice_id, d.sequence), []).append(d)
    return [tuple(g) for g in groups.values()]


def decide(
    due: list[Due],
    *,
    now: datetime,
    settings: TenantSettings,
    window: SendWindow | None,
    zone: ZoneInfo,
    calendar: WorkingCalendar,
    contacts: ContactLog,
) -> list[Decision]:
    """One customer's due timers at `now`: fire and/or defer decisions (see the module's docstring).
    `contacts` is read, not changed; the caller records the fires."""
    if not due:
        return []
    key = due[0].customer_id
    if window is not None and not window.contains(now, zone, calendar):
        at, words = window.place(now, zone, calendar, key)
        return [Decision("defer", tuple(due), at, "send_window", words, False)]
    log = list(contacts.instants)
    groups = [tuple(sorted(due, key=lambda d: (d.scheduled_at, d.invoice_id, d.sequence, d.channel)))]
    if not settings.consolidation:
        groups = _groups(due)
    decisions: list[Decision] = []
    for index, group in enumerate(groups):
        held = _hold(now, settings, zone, log)
        if held is not None:
            until, reason, words = held
            if window is not None:
                until, _ = window.place(until, zone, calendar, key)
            rest = tuple(d for g in groups[index:] for d in g)
            decisions.append(Decision("defer", rest, until, reason, words, False))
            break
        decisions.append(Decision("fire", group, now, None, None, settings.consolidation))
        log.append(now)
    return decisions


def consolidation_horizon(now: datetime, window: SendWindow | None, zone: ZoneInfo) -> datetime:
    """Until when a customer's later stages join a notice firing at `now`: the end of the current
    opening, or without a window the end of the customer's local day (UTC)."""
    if window is not None:
        return window.end_of_opening(now, zone)
    local = now.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class SimulatedSend:
    """One decision of the simulation, for `customer_id`, taken at `now`."""

    customer_id: str
    now: datetime
    decision: Decision


def simulate(
    timers_by_customer: Mapping[str, Sequence[Due]],
    settings: TenantSettings,
    windows: Mapping[str, SendWindow | None],
    zones: Mapping[str, ZoneInfo],
    calendars: Mapping[str, WorkingCalendar],
    contacts: Mapping[str, ContactLog],
    start: datetime,
) -> list[SimulatedSend]:
    """Run `decide` forward from `start` over planned (scheduled) timers as the firing loop would: a
    customer's timers due at the earliest pending time are decided together; deferred ones are queued
    again at their new time; fires are appended to the customer's contacts; with consolidation the
    customer's timers due before `consolidation_horizon` join the notice (moved to its time)."""
    pending = {c: sorted(ts, key=lambda d: d.scheduled_at) for c, ts in timers_by_customer.items() if ts}
    logs = {c: ContactLog(list(contacts[c].instants) if c in contacts else []) for c in pending}
    queue = [(max(ts[0].scheduled_at, start), c) for c, ts in pending.items()]
    heapq.heapify(queue)
    out: list[SimulatedSend] = []
    steps = 0
    while queue and steps < MAX_SIMULATED_STEPS:
        steps += 1
        now, customer = heapq.heappop(queue)
        timers = pending[customer]
        if not timers or min(t.scheduled_at for t in timers) > now:
            continue  # a stale queue entry: this customer's next time is queued too
        window, zone = windows.get(customer), zones[customer]
        due = [t for t in timers if t.scheduled_at <= now]
        rest = [t for t in timers if t.scheduled_at > now]
        decisions = decide(
            due, now=now, settings=settings, window=window, zone=zone, calendar=calendars[customer],
            contacts=logs[customer],
        )  # fmt: skip
        requeue: list[Due] = []
        for decision in decisions:
            if decision.kind == "fire":
                fired = decision.due
                if decision.notice:
                    horizon = consolidation_horizon(now, window, zone)
                    pulled = tuple(replace(t, scheduled_at=now) for t in rest if t.scheduled_at < horizon)
                    rest = [t for t in rest if t.scheduled_at >= horizon]
                    fired = fired + pulled
                    decision = replace(decision, due=fired)
                logs[customer].instants.append(now)  # one decision that fires = one contact
            else:
                requeue.extend(replace(t, scheduled_at=decision.at) for t in decision.due)
            out.append(SimulatedSend(customer, now, decision))
        pending[customer] = sorted(rest + requeue, key=lambda d: d.scheduled_at)
        if pending[customer]:
            heapq.heappush(queue, (max(pending[customer][0].scheduled_at, now), customer))
    return out
