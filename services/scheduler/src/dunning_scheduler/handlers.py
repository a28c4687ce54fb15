"""What the scheduler reacts to. Each handler runs in the consumer's transaction, after the inbox
has claimed the event id, and writes its events to the outbox in that same transaction.

- InvoiceIssued: store the invoice snapshot, plan its stages from the tenant's active policy
  (one timer per stage and channel), emit DunningPlanned. An invoice planned before: no-op.
  One statement per event, or per batch through BATCH_HANDLERS (see planner).
- PaymentReceived: apply the balance (a payment acknowledged before the one already applied is
  stale and ignored); once settled, cancel every pending timer (same statement) and emit
  StagesCancelled. A payment may arrive before its invoice: the invoice row is created settled, and
  its plan will be all `cancelled`.
- PaymentsWatermark: keep reconciliation's statement (the firing gate, see repository._FIRE_DUE)
  and wake the firing loop. Idempotent by construction, so it skips the inbox.
"""

from datetime import datetime
from decimal import Decimal

import asyncpg
from dunning import outbox
from dunning.clock import utcnow
from dunning.consumer import Rejected
from dunning.events import Event
from dunning.logging import get_logger

from dunning_scheduler import messages, repository
from dunning_scheduler.planner import TIMERS_CHANNEL, plan_invoices
from dunning_scheduler.planning import SETTLED
from dunning_scheduler.policy_store import ActivePolicies

log = get_logger(__name__)
__all__ = ["HANDLERS", "BATCH_HANDLERS", "INBOXLESS", "TIMERS_CHANNEL", "on_invoice_issued", "on_payment_received",
           "on_payments_watermark"]


async def on_invoice_issued(conn: asyncpg.Connection, event: Event, *, policies: ActivePolicies) -> None:
    await plan_invoices(conn, [event], policies=policies)  # see planner: one statement


async def on_payment_received(conn: asyncpg.Connection, event: Event) -> None:
    data = event.data
    invoice_id, tenant_id = data["invoice_id"], event.tenant_id
    if data["tenant_id"] != tenant_id or invoice_id != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    row, cancelled = await repository.apply_payment(
        conn, invoice_id=invoice_id, tenant_id=tenant_id, currency=data["currency"],
        balance=Decimal(data["balance_remaining"]), settled=data["settled"], payment_id=data["payment_id"],
        acknowledged_at=datetime.fromisoformat(data["acknowledged_at"]),
    )
    if row is None:
        existing = await repository.invoice_owner(conn, invoice_id)
        if existing is not None and existing["tenant_id"] != tenant_id:
            raise Rejected(f"invoice {invoice_id} belongs to another tenant")
        if existing is not None and existing["currency"] not in (None, data["currency"]):
            raise Rejected(f"payment currency {data['currency']} differs from the invoice's {existing['currency']}")
        log.info("scheduler.payment.stale", payment_id=data["payment_id"])
        return
    log.info("scheduler.payment.applied", payment_id=data["payment_id"], settled=row["settled"],
             planned=row["planned_at"] is not None)
    if not cancelled:
        return
    await outbox.add(conn, messages.stages_cancelled(
        tenant_id=tenant_id, invoice_id=invoice_id, reason=SETTLED, cause_event_id=event.id,
        cancelled_at=cancelled[0]["cancelled_at"] or utcnow(), rows=cancelled,
    ))
    log.info("scheduler.stages.cancelled", reason=SETTLED, count=len(cancelled))


WATERMARK = "dunning.PaymentsWatermark.v1"


async def on_payments_watermarks(conn: asyncpg.Connection, events: list[Event]) -> None:
    await repository.store_watermarks(conn, [(e.id, e.data) for e in events])
    await conn.execute("SELECT pg_notify($1 || '_' || current_schema(), '')", TIMERS_CHANNEL)


async def on_payments_watermark(conn: asyncpg.Connection, event: Event) -> None:
    await on_payments_watermarks(conn, [event])


HANDLERS = {
    "dunning.InvoiceIssued.v1": on_invoice_issued,
    "dunning.PaymentReceived.v1": on_payment_received,
    WATERMARK: on_payments_watermark,
}
INBOXLESS = frozenset({WATERMARK})

# For a consumer runner that applies a run of consecutive events of one type in one call (a list, in
# order, inside the batch's transaction): planning a batch of InvoiceIssued is one statement in all.
BATCH_HANDLERS = {
    "dunning.InvoiceIssued.v1": plan_invoices,
    WATERMARK: on_payments_watermarks,
}
