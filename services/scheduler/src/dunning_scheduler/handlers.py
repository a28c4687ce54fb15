"""What the scheduler reacts to. Each handler runs in the consumer's transaction, after the inbox
has claimed the event id, and writes its events to the outbox in that same transaction.

- InvoiceIssued: store the invoice snapshot, plan its stages from the tenant's active policy
  (one timer per stage and channel), emit DunningPlanned. An invoice planned before: no-op.
  One statement per event, or per batch (see planner).
- PaymentReceived: apply the balance (a payment acknowledged before the one already applied is
  stale and ignored); once settled, cancel every pending timer (same statement) and emit
  StagesCancelled. A payment may arrive before its invoice: the invoice row is created settled, and
  its plan will be all `cancelled`.
- PaymentsWatermark: keep reconciliation's statement (the firing gate, see repository.firing._FIRE_DUE)
  and wake the firing loop. Idempotent by construction, so it skips the inbox.

The table at the end is the whole of it; bootstrap binds the process's policy cache (`policies`) and
the cancel-latency histogram (`cancel_latency`, see metrics.py).
"""

import asyncpg
from prometheus_client import Histogram

from dunning import outbox
from dunning.clock import utcnow
from dunning.contracts import InvoiceIssued, PaymentReceived, PaymentsWatermark
from dunning.events import Event
from dunning.handler_table import HandlerSpec, Rejected
from dunning.logging import get_logger
from dunning_scheduler import messages, repository
from dunning_scheduler.planner import TIMERS_CHANNEL, plan_invoices
from dunning_scheduler.planning import SETTLED
from dunning_scheduler.policy_store import ActivePolicies

log = get_logger(__name__)


async def on_invoice_issued(conn: asyncpg.Connection, event: Event[InvoiceIssued], *, policies: ActivePolicies) -> None:
    await plan_invoices(conn, [event], policies=policies)  # see planner: one statement


async def on_invoices_issued(
    conn: asyncpg.Connection, events: list[Event[InvoiceIssued]], *, policies: ActivePolicies
) -> None:
    """Mirrors on_invoice_issued for a run of events: the same planning statement, once for all."""
    await plan_invoices(conn, events, policies=policies)


async def on_payment_received(
    conn: asyncpg.Connection, event: Event[PaymentReceived], *, cancel_latency: Histogram | None = None
) -> None:
    payment = event.data
    invoice_id, tenant_id = payment.invoice_id, event.tenant_id
    if payment.tenant_id != tenant_id or invoice_id != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    row, cancelled = await repository.apply_payment(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        currency=payment.currency,
        balance=payment.balance_remaining,
        settled=payment.settled,
        payment_id=payment.payment_id,
        acknowledged_at=payment.acknowledged_at,
    )
    if row is None:
        existing = await repository.invoice_owner(conn, invoice_id)
        if existing is not None and existing["tenant_id"] != tenant_id:
            raise Rejected(f"invoice {invoice_id} belongs to another tenant")
        if existing is not None and existing["currency"] not in (None, payment.currency):
            raise Rejected(f"payment currency {payment.currency} differs from the invoice's {existing['currency']}")
        log.info("scheduler.payment.stale", payment_id=payment.payment_id)
        return
    log.info(
        "scheduler.payment.applied",
        payment_id=payment.payment_id,
        settled=row["settled"],
        planned=row["planned_at"] is not None,
    )
    if not cancelled:
        return
    cancelled_at = cancelled[0]["cancelled_at"] or utcnow()
    await outbox.add(
        conn,
        messages.stages_cancelled(
            tenant_id=tenant_id,
            invoice_id=invoice_id,
            reason=SETTLED,
            cause_event_id=event.id,
            cancelled_at=cancelled_at,
            rows=cancelled,
        ),
    )
    log.info("scheduler.stages.cancelled", reason=SETTLED, count=len(cancelled))
    if cancel_latency is not None:  # acknowledged by reconciliation -> cancelled here
        cancel_latency.observe(max((cancelled_at - payment.acknowledged_at).total_seconds(), 0.0))


async def on_payments_watermarks(conn: asyncpg.Connection, events: list[Event[PaymentsWatermark]]) -> None:
    await repository.store_watermarks(conn, [(e.id, e.data.to_data()) for e in events])
    await repository.wake_firing(conn, TIMERS_CHANNEL)


async def on_payments_watermark(conn: asyncpg.Connection, event: Event[PaymentsWatermark]) -> None:
    await on_payments_watermarks(conn, [event])


HANDLERS = {
    InvoiceIssued: HandlerSpec(on_invoice_issued, batch=on_invoices_issued),
    PaymentReceived: HandlerSpec(on_payment_received),
    PaymentsWatermark: HandlerSpec(on_payments_watermark, batch=on_payments_watermarks, inbox=False),
}
