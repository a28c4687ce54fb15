"""Planning: from a policy and an invoice, the timers (one per stage and channel) with their states.

Pure functions, no I/O. Rules:
- a stage's instant is the policy anchor plus the stage offset (see `policy` and `durations`);
  instants never go backwards from one stage to the next (a calendar edge such as P1M vs P29D
  in February is clamped to the previous stage's instant);
- stages already in the past when the invoice is planned (an old invoice imported late): all but
  the latest past stage are `skipped` ("past_at_planning"), the latest one is scheduled now, so a
  customer never gets several reminders at once;
- an invoice already settled when it is planned (its payment arrived first) gets every stage
  `cancelled` ("invoice_settled"): the timeline shows what would have happened, nothing fires.
"""

from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dunning.ids import new_id

from dunning_scheduler.policy import Policy

SKIPPED_PAST = "past_at_planning"
SETTLED = "invoice_settled"


@dataclass(frozen=True)
class PlannedTimer:
    stage_id: str
    stage: str
    sequence: int
    channel: str
    template: str
    scheduled_at: datetime
    state: str  # scheduled | skipped | cancelled
    reason: str | None


def zone_for(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
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


def plan(policy: Policy, *, due_date: date, timezone_name: str, issued_at: datetime, settled: bool,
         now: datetime) -> list[PlannedTimer]:
    zone = zone_for(timezone_name) or ZoneInfo("UTC")
    instants = stage_instants(policy, anchor_instant(policy, due_date=due_date, zone=zone, issued_at=issued_at))
    past = [i for i, at in enumerate(instants) if at <= now]
    latest_past = past[-1] if past else None
    timers: list[PlannedTimer] = []
    for sequence, (stage, at) in enumerate(zip(policy.stages, instants)):
        if settled:
            state, reason = "cancelled", SETTLED
        elif latest_past is not None and sequence < latest_past:
            state, reason = "skipped", SKIPPED_PAST
        elif sequence == latest_past:
            state, reason, at = "scheduled", None, now
        else:
            state, reason = "scheduled", None
        for channel in stage.channels:
            timers.append(PlannedTimer(
                stage_id=new_id("stg"), stage=stage.name, sequence=sequence, channel=channel,
                template=stage.template, scheduled_at=at.astimezone(timezone.utc), state=state, reason=reason,
            ))
    return timers
