"""The events the scheduler publishes, each built here and only here, from its rows: DunningPlanned
(planner), StageEscalated (firing loop), StagesCancelled (handlers), StagesRescheduled (replanner).
All go out through the outbox
(`dunning.outbox.add`, or the planning statement for DunningPlanned, see planner)."""

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from dunning.contracts import (
    Customer,
    DunningPlanned,
    PlannedStage,
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
) -> DunningPlanned:
    return DunningPlanned(
        invoice_id,
        tenant_id,
        policy_id,
        policy_version,
        planned_at,
        tuple(
            PlannedStage(t.stage_id, t.stage, t.sequence, t.channel, t.scheduled_at, t.state, t.reason) for t in timers
        ),
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
                c.stage_id, c.stage, c.sequence, c.channel, c.previous_scheduled_at, c.scheduled_at, c.state
            )
            for c in changes
            if c.listed
        ),
    )
