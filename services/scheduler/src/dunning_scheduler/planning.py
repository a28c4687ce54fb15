"""Planning: from a policy and an invoice, the timers (one per stage and channel) with their states.

Pure functions, no I/O. Rules, in this order:
- a stage's instant is the policy anchor plus the stage offset (see `policy` and `durations`);
  overdue stages (offset > 0) count from the due date plus the policy's grace; with `days`
  "business" whole-day offsets (and the grace) count the customer's working days;
- a stage on a non-working day of the customer's calendar (weekend, public holiday, closure) rolls
  to the next or previous working day (`non_working_day`), keeping its local time;
- outside the send window it moves to the next opening plus the customer's stable spread offset
  (`windows.SendWindow.place`); `PlannedTimer.moved` says in words what moved it and why;
- instants never go backwards from one stage to the next (a calendar edge such as P1M vs P29D
  in February is clamped to the previous stage's instant);
- stages already in the past when the invoice entered dunning (an old invoice imported late): all
  but the latest past stage are `skipped` ("past_at_planning"), the latest one is scheduled at that
  moment, so a customer never gets several reminders at once. "Entered" is `accepted_at`, the time
  invoice-ingest accepted it (the InvoiceIssued's time), not the time of planning: a scheduler
  that lags, or was down, must not skip the stages that fell due meanwhile (none lost) — they are
  scheduled at their own times and fire at once;
- an invoice already settled when it is planned (its payment arrived first) gets every stage
  `cancelled` ("invoice_settled"): the timeline shows what would have happened, nothing fires;
- a stage the policy does not chase at this balance (`Policy.chased`: below the currency's minimum)
  is `skipped` ("below_minimum_balance").

Without a calendar, window, grace or minimum the plan is exactly the plain anchor-plus-offset one
(`plain_instants`, the hot path of imports); `placed_instants` is the general path beside it, and
`tests/unit/test_planning_rules.py` holds the two equal where no rule applies.

The timers of one plan share one time-ordered id, each followed by its two-digit index
(`stg_01JB...7V00`, `stg_01JB...7V01`, ...; at most 50 timers a plan).
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dunning.ids import new_id
from dunning_scheduler.calendars import EVERY_DAY, WorkingCalendar
from dunning_scheduler.policy import Policy, Stage
from dunning_scheduler.windows import SendWindow

SKIPPED_PAST = "past_at_planning"
BELOW_MINIMUM = "below_minimum_balance"
SETTLED = "invoice_settled"
# Why pending stages stop (StagesCancelled.reason) besides a settling payment.
CREDITED, VOIDED, WRITTEN_OFF = "invoice_credited", "invoice_voided", "invoice_written_off"
UTC_ZONE = ZoneInfo("UTC")
_INSTANTS_PER_POLICY = 4096  # cached (due date, zone) -> stage instants, per parsed policy


class PlannedTimer(NamedTuple):
    stage_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    state: str  # scheduled | skipped | cancelled
    reason: str | None
    moved: str | None = None  # in words, why the calendar or send window moved it


@lru_cache(maxsize=1024)
def zone_for(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def anchor_instant(policy: Policy, *, due_date: date, zone: ZoneInfo, issued_at: datetime) -> datetime:
    """The instant offsets count from, in the zone whose wall clock calendar offsets follow."""
    if policy.anchor == "issued_at":
        return issued_at.astimezone(zone)
    return datetime.combine(due_date, policy.send_time, tzinfo=zone)


def stage_instants(policy: Policy, anchor: datetime) -> list[datetime]:
    instants: list[datetime] = []
    for stage in policy.stages:
        at = stage.offset.add_to(anchor)
        if instants and at < instants[-1]:
            at = instants[-1]
        instants.append(at)
    return instants


def instants_for(policy: Policy, *, due_date: date, zone: ZoneInfo, issued_at: datetime) -> tuple[datetime, ...]:
    """Each stage's instant in UTC. With the due_date anchor they depend only on (due date, zone), which
    invoices imported together share, so they are computed once per pair and policy version."""
    if policy.anchor == "issued_at":
        return tuple(
            at.astimezone(UTC)
            for at in stage_instants(policy, anchor_instant(policy, due_date=due_date, zone=zone, issued_at=issued_at))
        )
    cache = policy.instants_cache
    key = (due_date, zone.key)
    found = cache.get(key)
    if found is None:
        if len(cache) >= _INSTANTS_PER_POLICY:
            cache.clear()
        anchor = anchor_instant(policy, due_date=due_date, zone=zone, issued_at=issued_at)
        found = cache[key] = tuple(at.astimezone(UTC) for at in stage_instants(policy, anchor))
    return found


class Placed(NamedTuple):
    """A stage's instant (UTC) before the customer's spread offset, and what moved it."""

    at: datetime
    moved: str | None
    by_window: bool  # the send window moved it: the customer's spread offset is added


def _start_date(policy: Policy, stage: Stage, day: date, calendar: WorkingCalendar) -> date:
    """The date an offset counts from: the anchor's, or for an overdue stage that plus the grace."""
    if not stage.offset.is_overdue or not policy.has_grace:
        return day
    grace = policy.grace.whole_days or 0
    return calendar.add_working_days(day, grace) if policy.days == "business" else day + timedelta(days=grace)


def _offset_instant(policy: Policy, stage: Stage, anchor: datetime, calendar: WorkingCalendar) -> datetime:
    """The anchor moved to its start date, plus the offset (working days when `days` is business)."""
    start = _start_date(policy, stage, anchor.date(), calendar)
    if start != anchor.date():
        anchor = datetime.combine(start, anchor.timetz().replace(tzinfo=None), tzinfo=anchor.tzinfo)
    whole = stage.offset.whole_days
    if policy.days == "business" and whole is not None:
        day = calendar.add_working_days(anchor.date(), whole)
        local = datetime.combine(day, anchor.time(), tzinfo=anchor.tzinfo)
        return local.replace(fold=0).astimezone(UTC)
    return stage.offset.add_to(anchor)


def _place(
    policy: Policy, at: datetime, zone: ZoneInfo, calendar: WorkingCalendar, window: SendWindow | None
) -> Placed:
    """Roll `at` off a non-working day, then into the send window (before the spread offset)."""
    moved: list[str] = []
    if not calendar.every_day and policy.non_working_day != "keep":
        local = at.astimezone(zone)
        reason = calendar.non_working_reason(local.date())
        if reason is not None:
            day = calendar.roll(local.date(), policy.non_working_day)
            at = datetime.combine(day, local.time(), tzinfo=zone).astimezone(UTC)
            moved.append(f"{local.date().isoformat()} is {_article(reason)}: moved to {day.isoformat()}")
    by_window = False
    if window is not None and not window.contains(at, zone, calendar):
        moved.append(window.outside_words(at, zone, calendar))
        at, by_window = window.next_opening(at, zone, calendar), True
    return Placed(at, "; ".join(moved) or None, by_window)


def _article(reason: str) -> str:
    """ "a Saturday", "a closure day", but "Christmas Day (DE)"."""
    if reason in ("closure day",) or reason.endswith("day") and " " not in reason:
        return f"a {reason}"
    return reason


def placed_instants(
    policy: Policy,
    *,
    due_date: date,
    zone: ZoneInfo,
    issued_at: datetime,
    calendar: WorkingCalendar,
    window: SendWindow | None,
) -> tuple[Placed, ...]:
    """Each stage's placed instant under the calendar and window (the general path of `plain_instants`).
    With the due_date anchor cached per (due date, zone, calendar, window) and policy version."""
    key = (due_date, zone.key, calendar.key, None if window is None else window.key)
    cache = policy.instants_cache
    if policy.anchor == "due_date":
        found = cache.get(key)
        if found is not None:
            return found
    anchor = anchor_instant(policy, due_date=due_date, zone=zone, issued_at=issued_at)
    placed = tuple(
        _place(policy, _offset_instant(policy, stage, anchor, calendar), zone, calendar, window)
        for stage in policy.stages
    )
    if policy.anchor == "due_date":
        if len(cache) >= _INSTANTS_PER_POLICY:
            cache.clear()
        cache[key] = placed
    return placed


def _needs_rules(policy: Policy, calendar: WorkingCalendar | None, window: SendWindow | None) -> bool:
    return window is not None or policy.has_grace or (calendar is not None and not calendar.every_day)


def plan(
    policy: Policy,
    *,
    due_date: date,
    timezone_name: str,
    issued_at: datetime,
    settled: bool,
    now: datetime,
    stage_ids: list[str] | None = None,
    accepted_at: datetime | None = None,
    calendar: WorkingCalendar | None = None,
    window: SendWindow | None = None,
    customer_key: str = "",
    balance: Decimal | None = None,
    currency: str | None = None,
) -> list[PlannedTimer]:
    """The timers, one per (stage, channel). `stage_ids` (as many as timers) reuses ids, so the plan
    of a settled and of an open invoice can be prepared together and the database picks one.
    `accepted_at`: when the invoice entered dunning (default `now`); never later than `now`.
    `calendar`/`window`: the customer's working calendar and send window (tenant settings; None: none);
    `customer_key` spreads window moves stably per customer; `balance`/`currency`: the open balance
    the minimum-balance threshold compares (None: not checked)."""
    zone = zone_for(timezone_name) or UTC_ZONE
    moved: list[str | None]
    if _needs_rules(policy, calendar, window):
        placed = placed_instants(
            policy, due_date=due_date, zone=zone, issued_at=issued_at, calendar=calendar or EVERY_DAY, window=window
        )
        spread = timedelta(seconds=window.spread_offset(customer_key)) if window is not None else timedelta(0)
        instants: list[datetime] = []
        moved = []
        for p in placed:
            at = p.at + spread if p.by_window else p.at
            instants.append(at if not instants or at >= instants[-1] else instants[-1])
            moved.append(p.moved)
    else:
        instants = list(instants_for(policy, due_date=due_date, zone=zone, issued_at=issued_at))
        moved = [None] * len(instants)
    if balance is None or currency is None or not policy.minimum_balance:
        chased = [True] * len(instants)
    else:
        chased = [policy.chased(stage, balance, currency) for stage in policy.stages]
    cutoff = now if accepted_at is None else min(accepted_at, now)
    latest_past = None
    if not settled:
        for index, at in enumerate(instants):
            if at > cutoff:
                break
            if chased[index]:
                latest_past = index
    base = new_id("stg") if stage_ids is None else None
    timers: list[PlannedTimer] = []
    for sequence, (stage, at) in enumerate(zip(policy.stages, instants, strict=True)):
        why = moved[sequence]
        if settled:
            state, reason = "cancelled", SETTLED
        elif not chased[sequence]:
            state, reason = "skipped", BELOW_MINIMUM
        elif latest_past is not None and sequence < latest_past:
            state, reason = "skipped", SKIPPED_PAST
        elif sequence == latest_past:
            state, reason, at, why = "scheduled", None, cutoff.astimezone(UTC), None
        else:
            state, reason = "scheduled", None
        for channel in stage.channels:
            stage_id = f"{base}{len(timers):02d}" if stage_ids is None else stage_ids[len(timers)]
            timers.append(PlannedTimer(stage_id, stage.name, sequence, channel, stage.template, at, state, reason, why))
    return timers
