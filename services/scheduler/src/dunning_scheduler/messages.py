"""The events the scheduler publishes, each built here and only here, from its rows: DunningPlanned
(planner), StageEscalated (firing loop), StagesCancelled (handlers). All go out through the outbox
(`dunning.outbox.add`, or the planning statement for DunningPlanned, see planner)."""

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from dunning.contracts import (
    Customer,
    DunningPlanned,
    PlannedStage,
    StageEscalated,
    StageInvoice,
    StageRef,
    StagesCancelled,
)
from dunning.money import quantize
from dunning_scheduler.planning import PlannedTimer


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
