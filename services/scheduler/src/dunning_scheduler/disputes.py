"""A dispute's end: rejected, or upheld without a credit, resumes at once; upheld with a credit
waits until the credit note whose `reference` is the dispute id is applied (then the credit either
settles the invoice, a terminal stop, or leaves a balance and dunning resumes on it).

The credit note travels on the payments topic and the resolution on the invoices topic, so either
may be applied first: a credit applied before the resolution is remembered on the dispute's pause
(`credit_applied`), and one applied even before the dispute was opened leaves an ended pause, so
the DisputeOpened that follows pauses nothing.
"""

import asyncpg

from dunning.contracts import CreditNoteIssued, DisputeResolved
from dunning.events import Event
from dunning.logging import get_logger
from dunning_scheduler import pauser
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import pauses as sql

log = get_logger(__name__)
UPHELD, REJECTED = "upheld", "rejected"


async def resolved(conn: asyncpg.Connection, event: Event[DisputeResolved], *, policies: ActivePolicies) -> None:
    d = event.data
    pause = await sql.pause_of(conn, f"{d.dispute_id}/{d.invoice_id}")
    if pause is None or pause["state"] == "ended":
        log.info("scheduler.dispute.not_paused", dispute_id=d.dispute_id, outcome=d.outcome)
        return
    awaiting = d.outcome == UPHELD and bool(d.credit_amount) and not pause["detail"].get("credit_applied")
    if awaiting:
        await sql.set_pause(conn, pause["pause_id"], state="awaiting_credit", detail={"outcome": d.outcome})
        log.info("scheduler.dispute.awaiting_credit", dispute_id=d.dispute_id, credit=str(d.credit_amount))
        return
    reason = "dispute_upheld" if d.outcome == UPHELD else "dispute_rejected"
    await pauser.end(conn, cause_id=d.dispute_id, reason=reason, policies=policies)
    log.info("scheduler.dispute.resolved", dispute_id=d.dispute_id, outcome=d.outcome)


async def credited(
    conn: asyncpg.Connection, event: Event[CreditNoteIssued], dispute_id: str, *, policies: ActivePolicies
) -> None:
    """The credit note of an upheld dispute was applied (after the balance, in the same transaction)."""
    n = event.data
    pause = await sql.pause_of(conn, f"{dispute_id}/{n.invoice_id}")
    if pause is None:  # credited before the scheduler saw the dispute: it will pause nothing
        await sql.insert_pauses(
            conn,
            cause="dispute",
            cause_id=dispute_id,
            tenant_id=n.tenant_id,
            invoice_ids=[n.invoice_id],
            customer_id=None,
            since=n.acknowledged_at,
            ends_at=None,
            detail={"credit_applied": True},
            cause_event_id=event.id,
        )
        await sql.end_pauses(conn, dispute_id, "dispute_upheld")
        return
    if pause["state"] == "awaiting_credit":
        await pauser.end(conn, cause_id=dispute_id, reason="dispute_upheld", policies=policies)
        log.info("scheduler.dispute.credited", dispute_id=dispute_id)
    elif pause["state"] == "active":
        await sql.set_pause(conn, pause["pause_id"], state="active", detail={"credit_applied": True})
