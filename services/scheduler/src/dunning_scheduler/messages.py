"""The events the scheduler publishes, each built here and only here, from its rows: DunningPlanned
(planner), StageEscalated (firing loop), StagesCancelled (handlers), StagesRescheduled (replanner),
DunningPaused, DunningResumed, PromiseKept, PromiseBroken (pauser), InstalmentMissed,
PaymentPlanBroken, PaymentPlanCompleted (plans).
All go out through the outbox
(`dunning.outbox.add`, or the planning statement for DunningPlanned, see planner)."""

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from dunning.contracts import (
    Customer,
    DunningPaused,
    DunningPlanned,
    DunningResumed,
    InstalmentMissed,
    PaymentPlanBroken,
    PaymentPlanCompleted,
    PlannedStage,
    PromiseBroken,
    PromiseKept,
    RescheduledStage,
    StageEscalated,
    StageInvoice,
    StageRef,
    StagesCancelled,
    StagesRescheduled,
)
from dunning.money import quantize
from dunning_scheduler.planning import PlannedTimer
from dunning_scheduler.replanning import Change


def dunning_planned(
    *,
    tenant_id: str,
    invoice_id: str,
    policy_id: str,
    policy_version: int,
    planned_at: datetime,
    timers: list[PlannedTimer],
    segment: dict[str, str] | None = None,
) -> DunningPlanned:
    """The plan; `segment` ({rule, reason}) only when the tenant has segment rules; each stage's
    `moved` says why the calendar or the send window moved it."""
    return DunningPlanned(
        invoice_id,
        tenant_id,
        policy_id,
        policy_version,
        planned_at,
        tuple(
            PlannedStage(
                t.stage_id, t.stage, t.sequence, t.channel, t.scheduled_at, t.state, t.reason, getattr(t, "moved", None)
            )
            for t in timers
        ),
        segment,
    )


def stage_escalated(row: asyncpg.Record) -> StageEscalated:
    """`row` is a fired timer joined with its invoice snapshot (repository.fire_due)."""
    currency = row["currency"]
    return StageEscalated(
        row["stage_id"],
        row["invoice_id"],
        row["tenant_id"],
        row["stage"],
        row["sequence"],
        row["channel"],
        row["template"],
        row["scheduled_at"],
        row["fired_at"],
        StageInvoice(
            row["external_id"],
            row["number"],
            currency,
            quantize(row["amount_due"], currency),
            quantize(row["balance"], currency),
            row["issue_date"],
            row["due_date"],
            row["payment_url"],
        ),
        Customer.from_data(row["customer"]),
        row["context"],
    )


def stages_cancelled(
    *,
    tenant_id: str,
    invoice_id: str,
    reason: str,
    cause_event_id: str | None,
    cancelled_at: datetime,
    rows: Iterable[asyncpg.Record],
) -> StagesCancelled:
    return StagesCancelled(
        invoice_id,
        tenant_id,
        reason,
        cause_event_id,
        cancelled_at,
        tuple(StageRef(r["stage_id"], r["stage"], r["sequence"], r["channel"], r["scheduled_at"]) for r in rows),
    )


def stages_rescheduled(
    *,
    tenant_id: str,
    invoice_id: str,
    reason: str,
    cause_event_id: str | None,
    policy_id: str,
    policy_version: int,
    rescheduled_at: datetime,
    changes: Iterable[Change],
) -> StagesRescheduled:
    """The re-planned stages that moved, were added or dropped (`Change.listed`), with old and new times."""
    return StagesRescheduled(
        invoice_id,
        tenant_id,
        reason,
        cause_event_id,
        policy_id,
        policy_version,
        rescheduled_at,
        tuple(
            RescheduledStage(
                c.stage_id,
                c.stage,
                c.sequence,
                c.channel,
                c.previous_scheduled_at,
                c.scheduled_at,
                "scheduled" if c.state == "paused" else c.state,  # paused: at that time, once resumed
            )
            for c in changes
            if c.listed
        ),
    )


def dunning_paused(
    *,
    tenant_id: str,
    invoice_id: str,
    cause: str,
    cause_id: str,
    cause_event_id: str,
    paused_at: datetime,
    rows: Iterable[asyncpg.Record],
) -> DunningPaused:
    """`rows`: the timers the pause moved to `paused` (may be none)."""
    return DunningPaused(
        invoice_id,
        tenant_id,
        cause,
        cause_id,
        cause_event_id,
        paused_at,
        tuple(StageRef(r["stage_id"], r["stage"], r["sequence"], r["channel"], r["scheduled_at"]) for r in rows),
    )


def dunning_resumed(
    *,
    tenant_id: str,
    invoice_id: str,
    cause: str,
    cause_id: str,
    reason: str,
    resume_mode: str,
    resumed_at: datetime,
    stages: Iterable[RescheduledStage],
) -> DunningResumed:
    return DunningResumed(invoice_id, tenant_id, cause, cause_id, reason, resume_mode, resumed_at, tuple(stages))


def promise_kept(promise: asyncpg.Record, *, paid: Decimal, kept_at: datetime) -> PromiseKept:
    """`promise`: its pauses row (detail: amount, currency, promised_date)."""
    d = promise["detail"]
    return PromiseKept(
        promise["cause_id"],
        promise["invoice_id"],
        promise["tenant_id"],
        d["currency"],
        quantize(Decimal(d["amount"]), d["currency"]),
        date.fromisoformat(d["promised_date"]),
        quantize(paid, d["currency"]),
        kept_at,
    )


def promise_broken(promise: asyncpg.Record, *, deadline: datetime, broken_at: datetime) -> PromiseBroken:
    d = promise["detail"]
    return PromiseBroken(
        promise["cause_id"],
        promise["invoice_id"],
        promise["tenant_id"],
        d["currency"],
        quantize(Decimal(d["amount"]), d["currency"]),
        date.fromisoformat(d["promised_date"]),
        quantize(promise["paid"], d["currency"]),
        deadline,
        broken_at,
    )


def instalment_missed(
    plan: asyncpg.Record, *, number: int, due: date, amount: Decimal, paid: Decimal, deadline: datetime, at: datetime
) -> InstalmentMissed:
    c = plan["currency"]
    return InstalmentMissed(
        plan["plan_id"], plan["tenant_id"], plan["customer_id"], number, due, quantize(amount, c), c,
        quantize(paid, c), deadline, at,
    )  # fmt: skip


def payment_plan_broken(plan: asyncpg.Record, *, number: int, remaining: Decimal, at: datetime) -> PaymentPlanBroken:
    c = plan["currency"]
    invoice_ids = tuple(i["invoice_id"] for i in plan["invoices"])
    return PaymentPlanBroken(
        plan["plan_id"], plan["tenant_id"], plan["customer_id"], invoice_ids, number, c, quantize(remaining, c), at
    )


def payment_plan_completed(plan: asyncpg.Record, *, at: datetime) -> PaymentPlanCompleted:
    c = plan["currency"]
    invoice_ids = tuple(i["invoice_id"] for i in plan["invoices"])
    return PaymentPlanCompleted(
        plan["plan_id"], plan["tenant_id"], plan["customer_id"], invoice_ids, c, quantize(plan["total"], c), at
    )
