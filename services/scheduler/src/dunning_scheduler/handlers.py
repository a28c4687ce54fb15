"""What the scheduler reacts to. Each handler runs in the consumer's transaction, after the inbox
has claimed the event id, and writes its events to the outbox in that same transaction.

- InvoiceIssued: store the invoice snapshot, plan its stages from the tenant's active policy
  (one timer per stage and channel), emit DunningPlanned. An invoice planned before: no-op.
  One statement per event, or per batch (see planner).
- InvoiceUpdated: keep the invoice's new state (an event whose version is not newer is ignored);
  the balance moves by the amount's difference, and at or below zero the invoice is settled and its
  pending timers cancelled (invoice_settled); a new due date or customer time zone re-plans the
  pending stages (replanner) and emits StagesRescheduled.
- InvoiceVoided, InvoiceWrittenOff: close the invoice and cancel every pending timer in the same
  statement (invoice_voided, invoice_written_off), emit StagesCancelled.
- PaymentReceived, CreditNoteIssued, CustomerCreditApplied, PaymentReversed, PaymentUnallocated
  (money_handlers.py, reopening.py): the balance as the event with the highest `balance_version`
  states it (an old producer's without one: a settling one settles whatever its age, the lowest
  balance wins) and the money recorded (money_applied); once settled, cancel every pending timer
  (same statement) and emit StagesCancelled (invoice_settled, invoice_credited). Money taken back
  from a settled invoice reopens it: its cancelled stages resume by the policy, no burst
  (DunningResumed, reason reopened). A payment may arrive before its invoice: the invoice row is
  created settled, and its plan will be all `cancelled`.
- CustomerUpdated (dunning.customers.v1): keep the customer's latest state, copy its contact data
  into its open invoices' snapshots, re-plan them if its time zone changed.
Every stop goes through one statement shape (repository.invoices.stop_statement): the invoice row
first, then its pending timers, under the locks the firing query respects.
- Every terminal stop publishes StagesCancelled (stopping.announce), even with no stage left, and ends the invoice's
  pauses; money applied also counts towards a pending promise (kept) and the payment plans the
  invoice is in (instalments covered, completed), and an upheld dispute's credit note resumes it.
- HoldPlaced, HoldReleased, DisputeOpened, DisputeResolved, PromiseMade, PaymentPlanAgreed,
  PaymentPlanCancelled, PaymentPending, PaymentPendingEnded: pause and resume (pause_handlers.py,
  pauser.py, plans.py, disputes.py).
- PaymentsWatermark, StopsWatermark: keep an acknowledging service's statement (the firing gate, see
  repository.firing._FIRE_DUE)
  and wake the firing loop. Idempotent by construction, so it skips the inbox.

The table at the end is the whole of it; bootstrap binds the process's policy cache (`policies`) and
the cancel-latency histogram (`cancel_latency`, see metrics.py).
"""

from datetime import datetime

import asyncpg

from dunning.contracts import (
    CreditNoteIssued,
    CustomerCreditApplied,
    CustomerUpdated,
    DisputeOpened,
    DisputeResolved,
    HoldPlaced,
    HoldReleased,
    InvoiceHandedToAgency,
    InvoiceIssued,
    InvoiceUpdated,
    InvoiceVoided,
    InvoiceWrittenOff,
    PaymentPending,
    PaymentPendingEnded,
    PaymentPlanAgreed,
    PaymentPlanCancelled,
    PaymentReceived,
    PaymentReversed,
    PaymentsWatermark,
    PaymentUnallocated,
    PromiseMade,
    StopsWatermark,
)
from dunning.events import Event
from dunning.handler_table import HandlerSpec, Rejected, check_envelope
from dunning.logging import get_logger
from dunning_scheduler import repository, stopping
from dunning_scheduler.agency_stop import on_invoice_handed_to_agency
from dunning_scheduler.money_handlers import (
    on_credit_note_issued,
    on_customer_credit_applied,
    on_payment_received,
    on_payment_reversed,
    on_payment_unallocated,
)
from dunning_scheduler.pause_handlers import (
    on_dispute_opened,
    on_dispute_resolved,
    on_hold_placed,
    on_hold_released,
    on_payment_pending,
    on_payment_pending_ended,
    on_payment_plan_agreed,
    on_payment_plan_cancelled,
    on_promise_made,
)
from dunning_scheduler.planner import TIMERS_CHANNEL, plan_invoices
from dunning_scheduler.planning import SETTLED, VOIDED, WRITTEN_OFF
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.replanner import replan_invoices
from dunning_scheduler.replanning import CALENDAR_CHANGED, DUE_DATE_CHANGED, TIMEZONE_CHANGED

log = get_logger(__name__)


async def on_invoice_issued(conn: asyncpg.Connection, event: Event[InvoiceIssued], *, policies: ActivePolicies) -> None:
    await plan_invoices(conn, [event], policies=policies)  # see planner: one statement


async def on_invoices_issued(
    conn: asyncpg.Connection, events: list[Event[InvoiceIssued]], *, policies: ActivePolicies
) -> None:
    """Mirrors on_invoice_issued for a run of events: the same planning statement, once for all."""
    await plan_invoices(conn, events, policies=policies)


async def on_invoice_updated(
    conn: asyncpg.Connection, event: Event[InvoiceUpdated], *, policies: ActivePolicies
) -> None:
    """The invoice's new state; the balance moves by the amount's difference (settled at or below
    zero: pending stages cancelled); a new due date or customer time zone re-plans pending stages."""
    invoice_id, tenant_id = stopping.checked(event)
    data = event.data
    held = await repository.lock_invoice(conn, invoice_id)
    if held is None or held["tenant_id"] != tenant_id or held["planned_at"] is None:
        await stopping.owned(conn, event)
        log.warning("scheduler.invoice.unknown", event_type=event.type, version=data.version)
        return
    if held["version"] >= data.version or held["status"] != "open":
        log.info("scheduler.invoice.stale", version=data.version, held=held["version"], status=held["status"])
        return
    row, cancelled = await repository.update_invoice(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        version=data.version,
        number=data.number,
        customer=data.customer.to_data(),
        customer_as_of=event.time,
        amount_due=data.amount_due,
        due_date=data.due_date,
        payment_url=data.payment_url,
        reason=SETTLED,
    )
    assert row is not None, "the row is locked, open and older"
    log.info("scheduler.invoice.updated", version=data.version, changed=list(data.changed), settled=row["settled"])
    await stopping.announce(conn, event, SETTLED, row, cancelled)
    if row["settled"]:
        return
    if row["due_date"] != held["due_date"]:
        reason = DUE_DATE_CHANGED
    elif row["timezone"] != held["timezone"]:
        reason = TIMEZONE_CHANGED
    else:
        return
    await replan_invoices(conn, [row], reason=reason, cause_event_id=event.id, changed_at=event.time, policies=policies)


async def on_invoice_voided(conn: asyncpg.Connection, event: Event[InvoiceVoided]) -> None:
    await _close(conn, event, "void", event.data.voided_at, VOIDED)


async def on_invoice_written_off(conn: asyncpg.Connection, event: Event[InvoiceWrittenOff]) -> None:
    await _close(conn, event, "written_off", event.data.written_off_at, WRITTEN_OFF)


async def _close(conn: asyncpg.Connection, event: Event, status: str, closed_at: datetime, reason: str) -> None:
    """A void or a write-off: the invoice closes and every pending stage is cancelled, as a settling
    payment cancels them (repository.stop_statement)."""
    invoice_id, tenant_id = stopping.checked(event)
    row, cancelled = await repository.close_invoice(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        status=status,
        version=event.data.version,
        closed_at=closed_at,
        reason=reason,
    )
    if row is None:
        await stopping.owned(conn, event)
        log.info("scheduler.invoice.stale", event_type=event.type, version=event.data.version)
        return
    log.info("scheduler.invoice.closed", status=status, version=event.data.version)
    await stopping.announce(conn, event, reason, row, cancelled)


def _profile(c: CustomerUpdated) -> dict:
    """What calendars and segments read of the customer (None fields left out)."""
    profile: dict[str, object] = {"country": c.country, "subdivision": c.subdivision, "attributes": c.attributes}
    profile["tags"] = None if c.tags is None else list(c.tags)
    profile["phone"], profile["postal_address"] = c.phone, c.postal_address  # SMS and letters read them
    return {k: v for k, v in profile.items() if v is not None}


async def on_customer_updated(
    conn: asyncpg.Connection, event: Event[CustomerUpdated], *, policies: ActivePolicies
) -> None:
    """The customer's latest contact data goes into its open invoices' snapshots (StageEscalated
    carries it); a new time zone re-plans their pending stages."""
    c = event.data
    check_envelope(event)
    stored = await repository.store_customer(
        conn,
        customer_id=c.customer_id,
        tenant_id=c.tenant_id,
        external_id=c.external_id,
        version=c.version,
        name=c.name,
        email=c.email,
        cc=list(c.cc),
        locale=c.locale,
        timezone=c.timezone,
        updated_at=c.updated_at,
        profile=_profile(c),
    )
    if not stored:
        if await repository.customer_tenant(conn, c.customer_id) not in (None, c.tenant_id):
            raise Rejected(f"customer {c.customer_id} belongs to another tenant")
        log.info("scheduler.customer.stale", customer_id=c.customer_id, version=c.version)
        return
    refreshed = await repository.refresh_customer(
        conn,
        tenant_id=c.tenant_id,
        customer_id=c.customer_id,
        updated_at=c.updated_at,
        external_id=c.external_id,
        name=c.name,
        email=c.email,
        locale=c.locale,
        timezone=c.timezone,
        profile=_profile(c),
    )
    planned = [r for r in refreshed if r["planned_at"] is not None]
    moved = [r for r in planned if r["previous_timezone"] != r["timezone"]]
    rescheduled = await replan_invoices(
        conn, moved, reason=TIMEZONE_CHANGED, cause_event_id=event.id, changed_at=event.time, policies=policies
    )
    # another country or subdivision: another working calendar (public holidays)
    regions = [r for r in planned if r["previous_timezone"] == r["timezone"] and r["previous_region"] != r["region"]]
    rescheduled += await replan_invoices(
        conn, regions, reason=CALENDAR_CHANGED, cause_event_id=event.id, changed_at=event.time, policies=policies
    )
    log.info("scheduler.customer.updated", customer_id=c.customer_id, invoices=len(refreshed), rescheduled=rescheduled)


async def on_payments_watermarks(conn: asyncpg.Connection, events: list[Event[PaymentsWatermark]]) -> None:
    await repository.store_watermarks(conn, [(e.id, e.data.to_data()) for e in events])
    await repository.wake_firing(conn, TIMERS_CHANNEL)


async def on_payments_watermark(conn: asyncpg.Connection, event: Event[PaymentsWatermark]) -> None:
    await on_payments_watermarks(conn, [event])


async def on_stops_watermarks(conn: asyncpg.Connection, events: list[Event[StopsWatermark]]) -> None:
    await repository.store_stops_watermarks(conn, [(e.id, e.data.to_data()) for e in events])
    await repository.wake_firing(conn, TIMERS_CHANNEL)


async def on_stops_watermark(conn: asyncpg.Connection, event: Event[StopsWatermark]) -> None:
    await on_stops_watermarks(conn, [event])


HANDLERS = {
    InvoiceIssued: HandlerSpec(on_invoice_issued, batch=on_invoices_issued),
    InvoiceUpdated: HandlerSpec(on_invoice_updated),
    InvoiceVoided: HandlerSpec(on_invoice_voided),
    InvoiceWrittenOff: HandlerSpec(on_invoice_written_off),
    # Money (money_handlers.py): applied, settling (StagesCancelled), taken back (a settled invoice
    # reopens: reopening.py).
    PaymentReceived: HandlerSpec(on_payment_received),
    CreditNoteIssued: HandlerSpec(on_credit_note_issued),
    CustomerCreditApplied: HandlerSpec(on_customer_credit_applied),
    PaymentReversed: HandlerSpec(on_payment_reversed),
    PaymentUnallocated: HandlerSpec(on_payment_unallocated),
    CustomerUpdated: HandlerSpec(on_customer_updated),
    # The gate's statements: each one's hint wakes a napping consumer at once (dunning.naps), so
    # they need not keep its fetches short between them (wakes=False: at rest one every 30 s did).
    PaymentsWatermark: HandlerSpec(on_payments_watermark, batch=on_payments_watermarks, inbox=False, wakes=False),
    StopsWatermark: HandlerSpec(on_stops_watermark, batch=on_stops_watermarks, inbox=False, wakes=False),
    # Stops that pause (pause_handlers.py): the invoice's pending stages wait, DunningPaused; their
    # end resumes them without a burst (DunningResumed).
    HoldPlaced: HandlerSpec(on_hold_placed),
    HoldReleased: HandlerSpec(on_hold_released),
    DisputeOpened: HandlerSpec(on_dispute_opened),
    DisputeResolved: HandlerSpec(on_dispute_resolved),
    PromiseMade: HandlerSpec(on_promise_made),
    PaymentPlanAgreed: HandlerSpec(on_payment_plan_agreed),
    PaymentPlanCancelled: HandlerSpec(on_payment_plan_cancelled),
    PaymentPending: HandlerSpec(on_payment_pending),
    PaymentPendingEnded: HandlerSpec(on_payment_pending_ended),
    # The hand-off to a collection agency (agency_stop.py): a terminal stop, reason with_agency.
    InvoiceHandedToAgency: HandlerSpec(on_invoice_handed_to_agency),
}
