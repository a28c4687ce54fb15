"""Pauses applied and ended: holds, disputes, promises (payment plans: `plans`), in the caller's
transaction, their events through the outbox.

- `pause`: record the pause (one per invoice, or the customer's for a customer hold), move the
  covered invoices' scheduled timers to `paused` under their row locks, publish DunningPaused for
  each (stages may be empty). An invoice not planned yet is paused when it is planned (planner).
- `end`: end a cause's pauses and `resume` the invoices no other pause still stops: their paused
  stages go again by the policy's `pauses.resume` (see `pausing`), DunningResumed lists them.
- `stopped`: a terminal stop (settled, credited, void, written off) ends every pause on the invoice
  without a resume (a promise pending then is kept if the invoice was paid).
- `paid`: money applied to an invoice (before or after the promise was applied) counts towards its
  pending promise; enough, and it is kept.
- `on_deadline`: a hold's end (hold_expired) and a promise's deadline (broken).
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import RescheduledStage
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_scheduler import messages, repository
from dunning_scheduler.pausing import resume as resume_times
from dunning_scheduler.planner import TIMERS_CHANNEL
from dunning_scheduler.planning import UTC_ZONE, zone_for
from dunning_scheduler.policy import DEFAULT_POLICY, Policy
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import pauses as sql

log = get_logger(__name__)
ALL_KINDS = frozenset({"policy", "promise_broken", "instalment"})
PROMISE_BROKEN = "promise_broken"
EXTRA_SEQUENCE = 900  # promise_broken and instalment reminders sort after the policy's stages


async def pause(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    cause: str,
    cause_id: str,
    cause_event_id: str,
    since: datetime,
    invoice_ids: Sequence[str] = (),
    customer_id: str | None = None,
    whole_customer: bool = False,
    ends_at: datetime | None = None,
    detail: dict | None = None,
) -> list[str]:
    """Apply a pause; returns the invoices paused now (none: a redelivery, or not planned yet)."""
    if customer_id is not None:
        await sql.lock_customer(conn, customer_id)
    targets: list[str | None] = [None] if whole_customer else list(invoice_ids)
    await sql.lock_invoices(conn, list(invoice_ids))
    new = await sql.insert_pauses(
        conn,
        cause=cause,
        cause_id=cause_id,
        tenant_id=tenant_id,
        invoice_ids=targets,
        customer_id=customer_id,
        since=since,
        ends_at=ends_at,
        detail=detail or {},
        cause_event_id=cause_event_id,
    )
    if not new:
        log.info("scheduler.pause.known", cause=cause, cause_id=cause_id)
        return []
    if ends_at is not None:
        await repository.add_deadlines(conn, [("hold_end", cause_id, 0, tenant_id, ends_at.isoformat(), False)])
    rows = await sql.pause_timers(
        conn,
        tenant_id=tenant_id,
        invoice_ids=list(invoice_ids),
        customer_id=customer_id if whole_customer else None,
        keep_instalments=cause == "payment_plan",
    )
    await publish_paused(conn, rows, tenant_id=tenant_id, cause=cause, cause_id=cause_id, cause_event_id=cause_event_id)
    invoices = sorted({r["invoice_id"] for r in rows})
    log.info("scheduler.pause.applied", cause=cause, cause_id=cause_id, invoices=len(invoices))
    return invoices


async def publish_paused(
    conn: asyncpg.Connection,
    rows: Sequence[asyncpg.Record],
    *,
    tenant_id: str,
    cause: str,
    cause_id: str,
    cause_event_id: str,
) -> None:
    """One DunningPaused per invoice in `rows` (timer rows; null stage_id: an invoice with none)."""
    by_invoice: dict[str, list] = defaultdict(list)
    for r in rows:
        by_invoice[r["invoice_id"]] += [r] if r["stage_id"] is not None else []
    now = utcnow()
    await outbox.add_many(
        conn,
        [
            messages.dunning_paused(
                tenant_id=tenant_id,
                invoice_id=invoice_id,
                cause=cause,
                cause_id=cause_id,
                cause_event_id=cause_event_id,
                paused_at=now,
                rows=timers,
            )
            for invoice_id, timers in by_invoice.items()
        ],
    )


async def end(
    conn: asyncpg.Connection,
    *,
    cause_id: str,
    reason: str,
    policies: ActivePolicies,
    broken_promise: asyncpg.Record | None = None,
    cancelled: dict[str, list[RescheduledStage]] | None = None,
    announce: bool = True,
    cause: str | None = None,
    invoice_ids: list[str] | None = None,
) -> list[asyncpg.Record]:
    """End a cause's live pauses (only those of `cause` and `invoice_ids`, if given) and resume what
    no other pause still stops; the pauses ended. `cancelled` and `announce`: as `resume`'s."""
    ended = await sql.end_pauses(conn, cause_id, reason, invoice_ids, cause)
    if not ended:
        return []
    # Planning in flight of a covered invoice wrote its timers paused: wait for it, then resume them.
    await sql.lock_customers(conn, [p["customer_id"] for p in ended if p["scope"] == "customer"])
    await sql.lock_invoices(conn, [p["invoice_id"] for p in ended if p["scope"] != "customer"])
    await repository.drop_deadlines(conn, cause_id)
    invoices: list[str] = []
    for p in ended:
        if p["scope"] == "customer":
            invoices += await sql.open_invoices_of(conn, p["tenant_id"], p["customer_id"])
        else:
            invoices.append(p["invoice_id"])
    first = ended[0]
    await resume(
        conn,
        sorted(set(invoices)),
        cause=first["cause"],
        cause_id=cause_id,
        reason=reason,
        policies=policies,
        broken_promise=broken_promise,
        cancelled=cancelled,
        announce=announce,
    )
    return ended


async def resume(
    conn: asyncpg.Connection,
    invoice_ids: list[str],
    *,
    cause: str,
    cause_id: str,
    reason: str,
    policies: ActivePolicies,
    broken_promise: asyncpg.Record | None = None,
    cancelled: dict[str, list[RescheduledStage]] | None = None,
    announce: bool = True,
) -> None:
    """Resume `invoice_ids` where no pause still stops them (a plan's pause still stops all but its
    instalment reminders). `broken_promise` (its pauses row): a promise_broken reminder goes first.
    `cancelled`: stages the caller cancelled, listed in the invoice's DunningResumed; `announce`
    False: no DunningResumed (a completed plan's invoice left open)."""
    if not invoice_ids:
        return
    invoices = await sql.lock_for_resume(conn, invoice_ids)
    timers: dict[str, list] = defaultdict(list)
    for t in await sql.lock_invoice_timers(conn, [i["invoice_id"] for i in invoices]):
        timers[t["invoice_id"]].append(t)
    now = utcnow()
    written: list[list] = []
    extra: list[list] = []
    events = []
    for inv in invoices:
        if inv["held"]:
            continue
        invoice_id = inv["invoice_id"]
        policy = await policy_of(conn, policies, inv)
        listed = list((cancelled or {}).get(invoice_id, []))
        own = list(timers[invoice_id])
        if broken_promise is not None and broken_promise["invoice_id"] == invoice_id:
            added = await _promise_broken_timers(conn, inv, policy, broken_promise, now, paused=inv["in_plan"])
            extra += added
            own += [dict(zip(sql.EXTRA_FIELDS, row, strict=True)) for row in added]
            if not inv["in_plan"]:
                listed += [RescheduledStage(r[0], r[3], r[4], r[5], None, now, "scheduled") for r in added]
        kinds = frozenset({"instalment"}) if inv["in_plan"] else ALL_KINDS
        changes = resume_times(
            own, mode=policy.resume_mode, now=now, kinds=kinds, after_broken_promise=broken_promise is not None
        )
        written += [[c.stage_id, c.state, c.scheduled_at, c.reason] for c in changes]
        if inv["in_plan"]:
            continue  # still paused by its payment plan: no DunningResumed
        listed += [
            RescheduledStage(c.stage_id, c.stage, c.sequence, c.channel, c.previous_scheduled_at, c.scheduled_at,
                             c.state)
            for c in changes
        ]  # fmt: skip
        events.append(
            messages.dunning_resumed(
                tenant_id=inv["tenant_id"],
                invoice_id=invoice_id,
                cause=cause,
                cause_id=cause_id,
                reason=reason,
                resume_mode=policy.resume_mode,
                resumed_at=now,
                stages=listed,
            )
        )
        log.info("scheduler.dunning.resumed", invoice_id=invoice_id, reason=reason, stages=len(listed))
    await sql.insert_extra_timers(conn, extra)
    await sql.write_resumed(conn, [[s, st, at.isoformat() if at else None, r] for s, st, at, r in written])
    if announce:
        await outbox.add_many(conn, events)
    if written or extra:
        await repository.wake_firing(conn, TIMERS_CHANNEL)


async def _promise_broken_timers(
    conn: asyncpg.Connection, inv: asyncpg.Record, policy: Policy, promise: asyncpg.Record, now: datetime, paused: bool
) -> list[list]:
    """The promise_broken reminder (one timer per channel of the policy's first stage, or email),
    quoting the promise; rows in EXTRA_FIELDS order."""
    d = promise["detail"]
    count = await sql.stage_count(conn, inv["invoice_id"], PROMISE_BROKEN)
    stage = PROMISE_BROKEN if count == 0 else f"{PROMISE_BROKEN}_{count + 1}"
    context = {
        "kind": PROMISE_BROKEN,
        "promise_id": promise["cause_id"],
        "promised_amount": d["amount"],
        "promised_date": d["promised_date"],
        "currency": d["currency"],
    }
    channels = policy.stages[0].channels if policy.stages else ("email",)
    base = new_id("stg")
    return [
        [f"{base}{n:02d}", inv["tenant_id"], inv["invoice_id"], stage, EXTRA_SEQUENCE + count, channel,
         PROMISE_BROKEN, now.isoformat(), "paused" if paused else "scheduled", policy.version, PROMISE_BROKEN,
         context]
        for n, channel in enumerate(channels)
    ]  # fmt: skip


async def policy_of(conn: asyncpg.Connection, policies: ActivePolicies, inv: asyncpg.Record) -> Policy:
    """The policy the invoice was planned with (resume mode, promise grace)."""
    if inv["policy_version"] is None:
        return DEFAULT_POLICY
    return await policies.version_of(
        conn, inv["tenant_id"], inv["policy_version"], inv["policy_is_default"], policy_key=inv.get("policy_key")
    )


def end_of_day(day: date, timezone_name: str | None, grace_policy: Policy, *, grace: str) -> datetime:
    """The end of `day` in the zone (midnight after it) plus the policy's grace (`promise` or `plan`)."""
    zone = zone_for(timezone_name or "UTC") or UTC_ZONE
    midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return with_grace(midnight, timezone_name, grace_policy, grace=grace)


def with_grace(at: datetime, timezone_name: str | None, grace_policy: Policy, *, grace: str) -> datetime:
    """The instant `at` plus the policy's grace (`promise` or `plan`), days counted on the zone's
    wall clock (P2D after 17:00 on Friday is 17:00 on Sunday there, across a clock change too)."""
    zone = zone_for(timezone_name or "UTC") or UTC_ZONE
    duration = grace_policy.promise_grace if grace == "promise" else grace_policy.plan_grace
    return duration.add_to(at.astimezone(zone)).astimezone(UTC)


async def stopped(conn: asyncpg.Connection, invoice_id: str, reason: str, *, paid: bool) -> None:
    """A terminal stop ends the invoice's own pauses, no resume; a pending promise of a paid
    (settled or credited) invoice is kept."""
    for p in await sql.end_invoice_pauses(conn, invoice_id, reason):
        if p["cause"] != "payment_plan":  # a plan's deadlines are the plan's (plans.py)
            await repository.drop_deadlines(conn, p["cause_id"])
        if p["cause"] == "promise" and paid:
            await outbox.add(conn, messages.promise_kept(p, paid=p["paid"], kept_at=utcnow()))
            log.info("scheduler.promise.kept", promise_id=p["cause_id"], settled=True)


async def paid(conn: asyncpg.Connection, invoice_id: str, *, policies: ActivePolicies) -> None:
    """What the invoice's pending promise has been paid, counted from the money applied to it
    (acknowledged at or after the promise and by its deadline, whenever it was applied: before
    PromiseMade too); once the promised amount is paid the promise is kept and its pause ends."""
    for p in await sql.count_promise_paid(conn, invoice_id):
        if p["paid"] < Decimal(p["detail"]["amount"]):
            continue
        for ended in await end(conn, cause_id=p["cause_id"], reason="promise_kept", policies=policies):
            await outbox.add(conn, messages.promise_kept(ended, paid=ended["paid"], kept_at=utcnow()))
            log.info("scheduler.promise.kept", promise_id=p["cause_id"], paid=str(ended["paid"]))


async def on_deadline(conn: asyncpg.Connection, deadline: asyncpg.Record, *, policies: ActivePolicies) -> None:
    """A hold's end resumes (hold_expired); a promise still pending at its deadline is broken."""
    kind, cause_id = deadline["kind"], deadline["cause_id"]
    if kind == "hold_end":
        ended = await end(conn, cause_id=cause_id, reason="hold_expired", policies=policies)
        log.info("scheduler.hold.expired", hold_id=cause_id, pauses=len(ended))
        return
    if kind != "promise":
        raise ValueError(f"not a pause deadline: {kind}")
    for promise in await sql.live_pauses(conn, cause_id):
        await outbox.add(conn, messages.promise_broken(promise, deadline=deadline["at"], broken_at=utcnow()))
        await end(conn, cause_id=cause_id, reason="promise_broken", policies=policies, broken_promise=promise)
        log.info("scheduler.promise.broken", promise_id=cause_id, invoice_id=promise["invoice_id"])
