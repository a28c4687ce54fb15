"""What invoice-ingest reacts to: stage and delivery events feed the timeline, reconciliation's money
events the balance (money_handlers.py).

Handlers are plain `(conn, event)` functions run by the consumer runner inside the transaction that
also records the event id in the inbox. Events arrive out of order across topics (a ReminderSent
may come before the DunningPlanned that introduces its stage), so every handler is an upsert that
converges: a stage's state is its highest-ranked observation (scheduled/skipped < escalated <
sent/failed/cancelled, later time breaking ties), so a terminal state never goes back; every
observation is appended to the stage's history; a re-plan (StagesRescheduled) is an observation
from a newer plan, so it moves the stage's time, adds stages and cancels the ones it drops. The
balance is the amount due minus what the money applied, plus what it took back (a sum: any order
converges).

The table at the end is the whole of it. Each timeline event is one `*_rows` function (the
observations it makes) applied one event at a time (`observe`) or a run at a time
(`timeline_batch`, its twin, held equal by tests/integration/test_timeline_batch.py).
"""

from collections.abc import Callable
from datetime import datetime

import asyncpg

from dunning.contracts import (
    CallTaskCompleted,
    CreditNoteIssued,
    CustomerCreditApplied,
    CustomerReplied,
    DunningPaused,
    DunningPlanned,
    DunningResumed,
    InstalmentMissed,
    InvoiceClosedByProcessor,
    InvoiceHandedToAgency,
    LateChargesAssessed,
    LateChargesWaived,
    NoticeComposed,
    NoticeSent,
    PaymentPending,
    PaymentPendingEnded,
    PaymentPlanBroken,
    PaymentPlanCompleted,
    PaymentReceived,
    PaymentReversed,
    PaymentUnallocated,
    PlannedStage,
    PromiseBroken,
    PromiseKept,
    ReminderCancelled,
    ReminderDeliveryUpdated,
    ReminderFailed,
    ReminderSent,
    StageDeferred,
    StageEscalated,
    StagesCancelled,
    StagesRescheduled,
    TaskCancelled,
    TaskCreated,
    WatermarkWanted,
)
from dunning.events import Event
from dunning.handler_table import HandlerSpec, Rejected
from dunning.logging import get_logger
from dunning.watermark import WANTED_HANDLER
from dunning_ingest import (
    collections_handlers,
    money_handlers,
    plans_service,
    policy_handlers,
    reply_handlers,
    repository,
    stop_handlers,
)
from dunning_ingest.money_output import reason_words
from dunning_ingest.timeline_batch import timeline_batch, unique_rows

log = get_logger(__name__)

RANK = {"scheduled": 0, "skipped": 0, "paused": 0, "escalated": 1, "sent": 2, "failed": 2, "cancelled": 2}


async def _invoice_for(conn: asyncpg.Connection, event: Event) -> asyncpg.Record:
    invoice_id = event.data.invoice_id
    invoice = await repository.invoice_ref(conn, invoice_id)
    if invoice is None:
        raise Rejected(f"unknown invoice {invoice_id}")
    if invoice["tenant_id"] != event.tenant_id or event.data.tenant_id != event.tenant_id:
        raise Rejected(f"invoice {invoice_id} does not belong to tenant {event.tenant_id}")
    return invoice


def _row(
    stage_id: str,
    stage: str,
    sequence: int | None,
    channel: str,
    scheduled_at: datetime | None,
    state: str,
    reason: str | None,
    at: datetime,
    planned_at: datetime | None = None,
    moved: tuple[datetime | None, datetime | None] = (None, None),
) -> repository.StageObservation:
    """One observation of a stage (repository.observe_stages' row); `moved`: a re-plan's (from, to)."""
    return repository.StageObservation(
        stage_id, stage, sequence, channel, scheduled_at, planned_at, state, RANK[state], reason, at, *moved
    )


def planned_rows(p: DunningPlanned) -> list[repository.StageObservation]:
    """Each stage as planned; a stage the calendar or the send window moved says why (`moved`)."""
    at = p.planned_at
    return [
        _row(s.stage_id, s.stage, s.sequence, s.channel, s.scheduled_at, s.state, _planned_reason(s), at, at)
        for s in p.stages
    ]


def _planned_reason(s: PlannedStage) -> str | None:
    if s.moved is None:
        return s.reason
    return f"{s.reason}; moved: {s.moved}"[:2000] if s.reason else f"moved: {s.moved}"[:2000]


def _in_notice(notice_id: str | None) -> str:
    return "" if notice_id is None else f" in notice {notice_id}"


def rescheduled_rows(r: StagesRescheduled) -> list[repository.StageObservation]:
    """A newer plan for the stages listed: a moved or added one takes its new time, a dropped one
    (no new time) is cancelled and keeps its old time."""
    at = r.rescheduled_at
    return [
        _row(
            s.stage_id,
            s.stage,
            s.sequence,
            s.channel,
            s.scheduled_at or s.previous_scheduled_at,
            s.state,
            reason_words(r.reason),
            at,
            at,
            (s.previous_scheduled_at, s.scheduled_at),
        )
        for s in r.stages
    ]


def escalated_rows(e: StageEscalated) -> list[repository.StageObservation]:
    reason = None if e.notice_id is None else f"fired{_in_notice(e.notice_id)}"  # a consolidated notice's stage
    return [_row(e.stage_id, e.stage, e.sequence, e.channel, e.scheduled_at, "escalated", reason, e.fired_at)]


def cancelled_rows(c: StagesCancelled) -> list[repository.StageObservation]:
    return [
        _row(s.stage_id, s.stage, s.sequence, s.channel, s.scheduled_at, "cancelled", c.reason, c.cancelled_at)
        for s in c.stages
    ]


def sent_rows(s: ReminderSent) -> list[repository.StageObservation]:
    reason = f"sent to {s.recipient}{_in_notice(s.notice_id)}"[:500]
    return [_row(s.stage_id, s.stage, None, s.channel, None, "sent", reason, s.sent_at)]


def failed_rows(f: ReminderFailed) -> list[repository.StageObservation]:
    kind = "permanent" if f.permanent else "transient"
    reason = f"{f.error_code} ({kind}, {f.attempts} attempt{'s' if f.attempts != 1 else ''}): {f.error}"
    reason += _in_notice(f.notice_id)
    return [_row(f.stage_id, f.stage, None, f.channel, None, "failed", reason[:2000], f.failed_at)]


def delivery_updated_rows(u: ReminderDeliveryUpdated) -> list[repository.StageObservation]:
    """The provider's later word on a sent reminder: an SMS undelivered or failed did not reach the customer."""
    state = "sent" if u.status == "delivered" else "failed"
    error = f" (error {u.error_code})" if u.error_code else ""
    reason = f"{u.provider}: {u.status}{error}" + (f" to {u.recipient}" if u.recipient else "")
    return [_row(u.stage_id, u.stage, None, u.channel, None, state, reason[:2000], u.reported_at)]


def observe(rows_of: Callable[..., list[repository.StageObservation]]):
    """The per-event handler of a timeline event whose observations `rows_of` lists."""

    async def handle(conn: asyncpg.Connection, event: Event) -> None:
        invoice = await _invoice_for(conn, event)
        unique = unique_rows(rows_of(event.data))
        if not unique:  # an empty plan: nothing to observe, the invoice is still checked
            return
        applied = await repository.observe_stages(conn, invoice["tenant_id"], invoice["id"], event.id, unique)
        if applied != len(unique):
            raise Rejected(f"{len(unique) - applied} stage(s) belong to another invoice")
        log.info("ingest.timeline.observed", event_name=event.name, stages=len(unique))

    handle.__name__ = f"observe_{rows_of.__name__.removesuffix('_rows')}"
    return handle


HANDLERS = {
    # DunningPlanned and StagesRescheduled also add the policies' entries (policy_handlers.py): the segment
    # rule that chose the policy, the stages no longer chased below the minimum balance
    DunningPlanned: policy_handlers.recorded(
        observe(planned_rows), timeline_batch(planned_rows), policy_handlers.segment_entries
    ),
    StageEscalated: HandlerSpec(observe(escalated_rows), batch=timeline_batch(escalated_rows)),
    StagesCancelled: HandlerSpec(observe(cancelled_rows), batch=timeline_batch(cancelled_rows)),
    StagesRescheduled: policy_handlers.recorded(
        observe(rescheduled_rows), timeline_batch(rescheduled_rows), policy_handlers.below_minimum_entries
    ),
    ReminderSent: HandlerSpec(observe(sent_rows), batch=timeline_batch(sent_rows)),
    ReminderFailed: HandlerSpec(observe(failed_rows), batch=timeline_batch(failed_rows)),
    ReminderDeliveryUpdated: HandlerSpec(observe(delivery_updated_rows)),  # sms.py: Twilio's status callbacks
    # the money (issue 11, money_handlers.py): allocations, credit notes, customer credit, unallocations
    # and reversals (which may reopen a paid invoice), money pending, invoices a processor closed
    PaymentReceived: HandlerSpec(money_handlers.payment_received),
    CreditNoteIssued: HandlerSpec(money_handlers.credit_note_issued),
    CustomerCreditApplied: HandlerSpec(money_handlers.customer_credit_applied),
    PaymentUnallocated: HandlerSpec(money_handlers.payment_unallocated),
    PaymentReversed: HandlerSpec(money_handlers.payment_reversed),
    PaymentPending: HandlerSpec(money_handlers.payment_pending),
    PaymentPendingEnded: HandlerSpec(money_handlers.payment_pending_ended),
    InvoiceClosedByProcessor: HandlerSpec(money_handlers.invoice_closed_by_processor),
    # the stops (issue 9): pauses, resumes, promises judged, deliveries dropped (stop_handlers.py)
    DunningPaused: HandlerSpec(stop_handlers.dunning_paused),
    DunningResumed: HandlerSpec(stop_handlers.dunning_resumed),
    PromiseKept: HandlerSpec(stop_handlers.promise_kept),
    PromiseBroken: HandlerSpec(stop_handlers.promise_broken),
    ReminderCancelled: HandlerSpec(stop_handlers.reminder_cancelled),
    InstalmentMissed: HandlerSpec(plans_service.on_instalment_missed),
    PaymentPlanBroken: HandlerSpec(plans_service.on_plan_broken),
    PaymentPlanCompleted: HandlerSpec(plans_service.on_plan_completed),
    # the policies at work (issue 10, policy_handlers.py): deferrals, consolidated notices (keyed by
    # customer: an entry on each invoice they name), late charges and their waiver
    StageDeferred: HandlerSpec(policy_handlers.stage_deferred),
    NoticeComposed: HandlerSpec(policy_handlers.notice_composed),
    NoticeSent: HandlerSpec(policy_handlers.notice_sent),
    LateChargesAssessed: HandlerSpec(policy_handlers.late_charges_assessed),
    LateChargesWaived: HandlerSpec(policy_handlers.late_charges_waived),
    # a customer's reply to a reminder (reply_handlers.py): a history entry, a hold if the tenant pauses on replies
    CustomerReplied: HandlerSpec(reply_handlers.customer_replied),
    # collections (collections_handlers.py): call tasks and their outcomes (a promise, a dispute), and
    # the hand-off to a collection agency (status with_agency)
    TaskCreated: HandlerSpec(collections_handlers.task_created),
    TaskCancelled: HandlerSpec(collections_handlers.task_cancelled),
    CallTaskCompleted: HandlerSpec(collections_handlers.call_task_completed),
    InvoiceHandedToAgency: HandlerSpec(collections_handlers.handed_to_agency),
    WatermarkWanted: WANTED_HANDLER,  # when the scheduler next needs a statement (dunning.watermark.Wanted)
}
