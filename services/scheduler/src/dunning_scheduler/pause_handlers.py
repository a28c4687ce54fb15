"""The handlers of every stop that pauses rather than ends an invoice's dunning (in the table at the
end of `handlers.py`, the one place that shows what the scheduler reacts to):

- HoldPlaced / HoldReleased (dunning.customers.v1): a hold on one invoice or on every invoice of a
  customer, present and future, until released or its `ends_at` (the deadline loop: hold_expired).
- DisputeOpened / DisputeResolved (dunning.invoices.v1): rejected, or upheld without a credit,
  resumes; upheld with a credit waits for the credit note that references it (`disputes`).
- PromiseMade (dunning.invoices.v1): paused until kept (paid) or its deadline (broken; `pauser`).
- PaymentPlanAgreed / PaymentPlanCancelled (dunning.customers.v1): see `plans`.
- PaymentPending / PaymentPendingEnded (dunning.payments.v1): a debit still processing or a
  chargeback pauses until it ends (succeeded, failed, won, lost).
Each applies in the consumer's transaction, under the invoices' row locks, its events through the outbox.
"""

import asyncpg

from dunning.contracts import (
    DisputeOpened,
    DisputeResolved,
    HoldPlaced,
    HoldReleased,
    PaymentPending,
    PaymentPendingEnded,
    PaymentPlanAgreed,
    PaymentPlanCancelled,
    PromiseMade,
)
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning_scheduler import disputes, pauser, plans, repository
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.repository import pauses as sql

log = get_logger(__name__)


async def on_hold_placed(conn: asyncpg.Connection, event: Event[HoldPlaced]) -> None:
    h = event.data
    check_envelope(event)
    await pauser.pause(
        conn,
        tenant_id=h.tenant_id,
        cause="hold",
        cause_id=h.hold_id,
        cause_event_id=event.id,
        since=h.acknowledged_at,
        invoice_ids=[h.invoice_id] if h.invoice_id else [],
        customer_id=h.customer_id,
        whole_customer=h.invoice_id is None,
        ends_at=h.ends_at,
        detail={"reason": h.reason, "placed_by": h.placed_by},
    )


async def on_hold_released(conn: asyncpg.Connection, event: Event[HoldReleased], *, policies: ActivePolicies) -> None:
    h = event.data
    check_envelope(event)
    await sql.lock_customer(conn, h.customer_id)
    ended = await pauser.end(conn, cause_id=h.hold_id, reason="hold_released", policies=policies)
    log.info("scheduler.hold.released", hold_id=h.hold_id, pauses=len(ended))


async def on_dispute_opened(conn: asyncpg.Connection, event: Event[DisputeOpened]) -> None:
    d = event.data
    await _invoice_of(conn, event)
    await pauser.pause(
        conn,
        tenant_id=d.tenant_id,
        cause="dispute",
        cause_id=d.dispute_id,
        cause_event_id=event.id,
        since=d.acknowledged_at,
        invoice_ids=[d.invoice_id],
        detail={"currency": d.currency},
    )


async def on_dispute_resolved(
    conn: asyncpg.Connection, event: Event[DisputeResolved], *, policies: ActivePolicies
) -> None:
    await _invoice_of(conn, event)
    await disputes.resolved(conn, event, policies=policies)


async def on_promise_made(conn: asyncpg.Connection, event: Event[PromiseMade], *, policies: ActivePolicies) -> None:
    """The deadline: the end of the promised date in the customer's time zone (or the instant
    promised, `due_by`, when given) plus the promise grace of the policy the invoice was planned
    with; judged by the deadline loop under the gate. Money already applied that was acknowledged
    since the promise counts (pauser.paid)."""
    p = event.data
    invoice = await _invoice_of(conn, event)
    policy = await pauser.policy_of(conn, policies, invoice) if invoice is not None else None
    if policy is None:
        policy = (policies.get(p.tenant_id) or await policies.load(conn, p.tenant_id)).policy
    timezone = invoice["timezone"] if invoice is not None else None
    if p.due_by is not None:
        deadline = pauser.with_grace(p.due_by, timezone, policy, grace="promise")
    else:
        deadline = pauser.end_of_day(p.promised_date, timezone, policy, grace="promise")
    detail = {
        "amount": str(p.amount),
        "currency": p.currency,
        "promised_date": p.promised_date.isoformat(),
        "deadline": deadline.isoformat(),
    } | ({"due_by": p.due_by.isoformat()} if p.due_by is not None else {})
    paused = await pauser.pause(
        conn,
        tenant_id=p.tenant_id,
        cause="promise",
        cause_id=p.promise_id,
        cause_event_id=event.id,
        since=p.acknowledged_at,
        invoice_ids=[p.invoice_id],
        detail=detail,
    )
    await repository.add_deadlines(conn, [("promise", p.promise_id, 0, p.tenant_id, deadline.isoformat(), True)])
    log.info("scheduler.promise.made", promise_id=p.promise_id, deadline=deadline.isoformat(), paused=bool(paused))
    # Money acknowledged at or after the promise may have been applied before it (the payments
    # topic is consumed apart from this one): it counts now, and if it is enough the promise is
    # kept at once (PromiseKept, the pause ended).
    await pauser.paid(conn, p.invoice_id, policies=policies)


async def on_payment_plan_agreed(
    conn: asyncpg.Connection, event: Event[PaymentPlanAgreed], *, policies: ActivePolicies
) -> None:
    check_envelope(event)
    await plans.agreed(conn, event, policies=policies)


async def on_payment_plan_cancelled(
    conn: asyncpg.Connection, event: Event[PaymentPlanCancelled], *, policies: ActivePolicies
) -> None:
    check_envelope(event)
    await plans.cancelled(conn, event, policies=policies)


async def _invoice_of(conn: asyncpg.Connection, event: Event) -> asyncpg.Record | None:
    """The invoice an invoice-topic stop is about (None: not known yet); another tenant's: Rejected."""
    check_envelope(event)
    row = await repository.invoice_for_pause(conn, event.subject)
    if row is not None and row["tenant_id"] != event.tenant_id:
        raise Rejected(f"invoice {event.subject} belongs to another tenant")
    return row


# Money still pending (dunning.payments.v1): a debit still processing, a disputed card payment.
PENDING_CAUSES = {"processing": "payment_processing", "chargeback": "chargeback"}
PENDING_ENDS = {"succeeded": "payment_succeeded", "failed": "payment_failed", "won": "chargeback_won",
                "lost": "chargeback_lost"}  # fmt: skip


async def on_payment_pending(conn: asyncpg.Connection, event: Event[PaymentPending]) -> None:
    """The invoice pauses until the money's fate is known (cause payment_processing or chargeback,
    cause_id the payment). Processing money is not counted as paid: the balance does not move. On a
    settled invoice (a chargeback on a paid one) the pause is recorded only: if a reversal reopens
    the invoice while it is open, its stages stay paused until it ends."""
    p = event.data
    await _invoice_of(conn, event)
    await pauser.pause(
        conn,
        tenant_id=p.tenant_id,
        cause=PENDING_CAUSES[p.kind],
        cause_id=p.payment_id,
        cause_event_id=event.id,
        since=p.acknowledged_at,
        invoice_ids=[p.invoice_id],
        detail={"source": p.source, "source_reference": p.source_reference, "currency": p.currency,
                "amount": str(p.amount), "since": p.since.isoformat()},
    )  # fmt: skip


async def on_payment_pending_ended(
    conn: asyncpg.Connection, event: Event[PaymentPendingEnded], *, policies: ActivePolicies
) -> None:
    """The pause ends and dunning resumes without a burst (DunningResumed, reason payment_succeeded,
    payment_failed, chargeback_won or chargeback_lost). A success is followed by its PaymentReceived,
    a lost chargeback by its PaymentReversed (which reopens a paid invoice: `reopening`); `won` on a
    settled invoice has nothing to resume."""
    e = event.data
    await _invoice_of(conn, event)
    ended = await pauser.end(
        conn,
        cause_id=e.payment_id,
        reason=PENDING_ENDS[e.outcome],
        policies=policies,
        cause=PENDING_CAUSES[e.kind],
        invoice_ids=[e.invoice_id],
    )
    log.info("scheduler.pending.ended", payment_id=e.payment_id, kind=e.kind, outcome=e.outcome, pauses=len(ended))
