"""What the scheduler reacts to. Each handler runs in the consumer's transaction, after the inbox
has claimed the event id, and writes its events to the outbox in that same transaction.

- InvoiceIssued: store the invoice snapshot, plan its stages from the tenant's active policy
  (one timer per stage and channel), emit DunningPlanned. An invoice planned before: no-op.
- PaymentReceived: apply the balance (a payment acknowledged before the one already applied is
  stale and ignored); once settled, cancel every pending timer and emit StagesCancelled. A payment
  may arrive before its invoice: the invoice row is created settled, and its plan will be all
  `cancelled`.
"""

from datetime import date, datetime
from decimal import Decimal

import asyncpg
from dunning import outbox
from dunning.clock import utcnow
from dunning.consumer import Rejected
from dunning.events import Event
from dunning.logging import get_logger

from dunning_scheduler import messages, repository
from dunning_scheduler.planning import SETTLED, plan, zone_for
from dunning_scheduler.policy_store import active_policy

log = get_logger(__name__)
TIMERS_CHANNEL = "scheduler_timers"


async def on_invoice_issued(conn: asyncpg.Connection, event: Event) -> None:
    data = event.data
    invoice_id, tenant_id = data["invoice_id"], event.tenant_id
    if data["tenant_id"] != tenant_id or invoice_id != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    stored = await active_policy(conn, tenant_id)
    policy = stored.policy
    snapshot = repository.InvoiceSnapshot(
        invoice_id=invoice_id, tenant_id=tenant_id, external_id=data["external_id"], number=data["number"],
        currency=data["currency"], amount_due=Decimal(data["amount_due"]),
        issue_date=date.fromisoformat(data["issue_date"]), due_date=date.fromisoformat(data["due_date"]),
        payment_url=data["payment_url"], customer=data["customer"],
        issued_at=datetime.fromisoformat(data["issued_at"]), issued_event_id=event.id,
    )
    row = await repository.record_issued_invoice(conn, snapshot, policy_id=policy.policy_id,
                                                 policy_version=policy.version)
    if row is None:
        existing = await repository.invoice_owner(conn, invoice_id)
        if existing is not None and existing["tenant_id"] != tenant_id:
            raise Rejected(f"invoice {invoice_id} belongs to another tenant")
        log.info("scheduler.invoice.already_planned")
        return
    timezone_name = data["customer"]["timezone"]
    if zone_for(timezone_name) is None:
        log.warning("scheduler.invoice.unknown_timezone", timezone=timezone_name, fallback="UTC")
    now = row["planned_at"]
    timers = plan(policy, due_date=snapshot.due_date, timezone_name=timezone_name, issued_at=snapshot.issued_at,
                  settled=row["settled"], now=now)
    await repository.insert_timers(conn, tenant_id, invoice_id, policy.version, timers)
    await outbox.add(conn, messages.dunning_planned(
        tenant_id=tenant_id, invoice_id=invoice_id, policy_id=policy.policy_id, policy_version=policy.version,
        planned_at=now, timers=timers,
    ))
    if any(t.state == "scheduled" and t.scheduled_at <= now for t in timers):
        await conn.execute("SELECT pg_notify($1 || '_' || current_schema(), '')", TIMERS_CHANNEL)
    log.info("scheduler.invoice.planned", policy_id=policy.policy_id, policy_version=policy.version,
             timers=len(timers), settled=row["settled"],
             skipped=sum(t.state == "skipped" for t in timers))


async def on_payment_received(conn: asyncpg.Connection, event: Event) -> None:
    data = event.data
    invoice_id, tenant_id = data["invoice_id"], event.tenant_id
    if data["tenant_id"] != tenant_id or invoice_id != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    row = await repository.apply_payment(
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
    if not row["settled"]:
        return
    cancelled = await repository.cancel_pending(conn, invoice_id, SETTLED)
    if not cancelled:
        return
    await outbox.add(conn, messages.stages_cancelled(
        tenant_id=tenant_id, invoice_id=invoice_id, reason=SETTLED, cause_event_id=event.id,
        cancelled_at=cancelled[0]["cancelled_at"] or utcnow(), rows=cancelled,
    ))
    log.info("scheduler.stages.cancelled", reason=SETTLED, count=len(cancelled))


HANDLERS = {
    "dunning.InvoiceIssued.v1": on_invoice_issued,
    "dunning.PaymentReceived.v1": on_payment_received,
}
