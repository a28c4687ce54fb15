"""The events the scheduler emits, built from its rows (all go out through the outbox)."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg
from dunning.clock import isoformat
from dunning.events import new_event
from dunning.money import format_amount

from dunning_scheduler.planning import PlannedTimer

SOURCE = "/scheduler"
DUNNING_PLANNED = "dunning.DunningPlanned.v1"
STAGE_ESCALATED = "dunning.StageEscalated.v1"
STAGES_CANCELLED = "dunning.StagesCancelled.v1"


_TIMESTAMPS: dict[datetime, str] = {}


def timestamp(value: datetime) -> str:
    """`dunning.clock.isoformat`, remembered: the invoices of a bulk import share their stage instants."""
    text = _TIMESTAMPS.get(value)
    if text is None:
        if len(_TIMESTAMPS) >= 50_000:
            _TIMESTAMPS.clear()
        text = _TIMESTAMPS[value] = isoformat(value)
    return text


def dunning_planned(*, tenant_id: str, invoice_id: str, policy_id: str, policy_version: int,
                    planned_at: datetime, timers: list[PlannedTimer]) -> dict[str, Any]:
    # The data is written JSON-ready here (the hot path of planning), as new_event would write it.
    envelope = new_event(DUNNING_PLANNED, {}, source=SOURCE, subject=invoice_id, tenant_id=tenant_id)
    envelope["data"] = {
        "invoice_id": invoice_id,
        "tenant_id": tenant_id,
        "policy_id": policy_id,
        "policy_version": policy_version,
        "planned_at": timestamp(planned_at),
        "stages": [{"stage_id": t.stage_id, "stage": t.stage, "sequence": t.sequence, "channel": t.channel,
                    "scheduled_at": timestamp(t.scheduled_at), "state": t.state, "reason": t.reason}
                   for t in timers],
    }
    return envelope


def stage_escalated(row: asyncpg.Record) -> dict[str, Any]:
    """`row` is a fired timer joined with its invoice snapshot (repository.fire_due)."""
    currency = row["currency"]
    return new_event(STAGE_ESCALATED, {
        "stage_id": row["stage_id"],
        "invoice_id": row["invoice_id"],
        "tenant_id": row["tenant_id"],
        "stage": row["stage"],
        "sequence": row["sequence"],
        "channel": row["channel"],
        "template": row["template"],
        "scheduled_at": row["scheduled_at"],
        "fired_at": row["fired_at"],
        "invoice": {
            "external_id": row["external_id"],
            "number": row["number"],
            "currency": currency,
            "amount_due": format_amount(row["amount_due"], currency),
            "balance": format_amount(row["balance"], currency),
            "issue_date": row["issue_date"],
            "due_date": row["due_date"],
            "payment_url": row["payment_url"],
        },
        "customer": row["customer"],
    }, source=SOURCE, subject=row["invoice_id"], tenant_id=row["tenant_id"])


def stages_cancelled(*, tenant_id: str, invoice_id: str, reason: str, cause_event_id: str | None,
                     cancelled_at: datetime, rows: Iterable[asyncpg.Record]) -> dict[str, Any]:
    return new_event(STAGES_CANCELLED, {
        "invoice_id": invoice_id,
        "tenant_id": tenant_id,
        "reason": reason,
        "cause_event_id": cause_event_id,
        "cancelled_at": cancelled_at,
        "stages": [{"stage_id": r["stage_id"], "stage": r["stage"], "sequence": r["sequence"],
                    "channel": r["channel"], "scheduled_at": r["scheduled_at"]} for r in rows],
    }, source=SOURCE, subject=invoice_id, tenant_id=tenant_id)
