"""Planning: from a policy and an invoice, the timers (one per stage and channel) with their states.

Pure functions, no I/O. Rules:
- a stage's instant is the policy anchor plus the stage offset (see `policy` and `durations`);
  instants never go backwards from one stage to the next (a calendar edge such as P1M vs P29D
  in February is clamped to the previous stage's instant);
- stages already in the past when the invoice entered dunning (an old invoice imported late): all
  but the latest past stage are `skipped` ("past_at_planning"), the latest one is scheduled at that
  moment, so a customer never gets several reminders at once. "Entered" is `accepted_at`, the time
  invoice-ingest accepted it (the InvoiceIssued's time), not the time of planning: a scheduler
  that lags, or was down, must not skip the stages that fell due meanwhile (none lost) — they are
  scheduled at their own times and fire at once;
- an invoice already settled when it is planned (its payment arrived first) gets every stage
  `cancelled` ("invoice_settled"): the timeline shows what would have happened, nothing fires.

The timers of one plan share one time-ordered id, each followed by its two-digit index
(`stg_01JB...7V00`, `stg_01JB...7V01`, ...; at most 50 timers a plan).
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dunning.ids import new_id
from dunning_scheduler.calendars import WorkingCalendar
from dunning_scheduler.policy import Policy
from dunning_scheduler.windows import SendWindow

SKIPPED_PAST = "past_at_planning"
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
    `accepted_at`: when the invoice entered dunning (default `now`); never later than `now`."""
    zone = zone_for(timezone_name) or UTC_ZONE
    instants = instants_for(policy, due_date=due_date, zone=zone, issued_at=issued_at)
    cutoff = now if accepted_at is None else min(accepted_at, now)
    latest_past = None
    if not settled:
        for index, at in enumerate(instants):
            if at > cutoff:
                break
            latest_past = index
    base = new_id("stg") if stage_ids is None else None
    timers: list[PlannedTimer] = []
    for sequence, (stage, at) in enumerate(zip(policy.stages, instants, strict=True)):
        if settled:
            state, reason = "cancelled", SETTLED
        elif latest_past is not None and sequence < latest_past:
            state, reason = "skipped", SKIPPED_PAST
        elif sequence == latest_past:
            state, reason, at = "scheduled", None, cutoff.astimezone(UTC)
        else:
            state, reason = "scheduled", None
        for channel in stage.channels:
            stage_id = f"{base}{len(timers):02d}" if stage_ids is None else stage_ids[len(timers)]
            timers.append(PlannedTimer(stage_id, stage.name, sequence, channel, stage.template, at, state, reason))
    return timers
