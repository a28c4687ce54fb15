"""What the notifier reacts to. Handlers run inside the consumer's transaction (inbox dedupe by
event id included) and only record: a delivery to make (the dispatcher sends, outside any consumer
transaction), a customer's current contacts (the dispatcher reads them when it sends), or a stop of
an invoice. The table at the end is the whole of it.

The last mile of the cancel guarantee. The scheduler publishes every stop of an invoice on the
stages topic, in the invoice's order: `StagesCancelled` for a terminal one (settled, credited, void,
written off; even with no stage left to cancel) and `DunningPaused` for a pause (hold, dispute,
promise, payment plan), until `DunningResumed`. The transaction that applies a stop cancels every
delivery of the invoice that is `pending` (waiting for its first attempt or in retry backoff),
publishing `ReminderCancelled` for each, and remembers the stop (`invoice_stops`): after a terminal
stop, a StageEscalated arriving (redelivered, re-emitted) records its delivery `cancelled`. Not so
after a pause: in the invoice's order, a StageEscalated after DunningPaused is one the scheduler
fired after applying the pause, on purpose (a payment plan's instalment reminders, which its own
pause lets through; an invoice resumed without a DunningResumed: a hold ended while a plan still
pauses it, a completed plan's invoice left open), and a copy of one fired before it is the same
(invoice, stage, channel), which never makes a second delivery. A delivery `sending` at that moment
is mid-attempt and finishes: sent or failed as it comes, but a transient failure, an expired lease
or a hand-back makes it `cancelled` instead of `pending` (the stop marks the row; repository.py).
The boundary, exactly: **no attempt starts after the notifier has applied the stop** (committed this
transaction); an attempt is started by the claim's commit, and the claim and the stop lock the same
row, so one commits first. At most the one attempt in flight at the stop completes.

Consolidated notices (notices.py): NoticeComposed records one notice to send; a StageEscalated with
`notice_id` is one of its stages and records nothing (the notice's item carries all the stage needs,
and its Reminder* events come from the notice: a delivery row of its own would be a second state
machine for the same send). Every stop also leaves the invoice out of the notices not sent yet.
"""

import asyncpg

from dunning import outbox
from dunning.contracts import (
    CustomerUpdated,
    DunningPaused,
    DunningResumed,
    NoticeComposed,
    ReminderCancelled,
    StageEscalated,
    StagesCancelled,
)
from dunning.events import Event
from dunning.handler_table import HandlerSpec, check_envelope
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import agency, delivery_inserts, notices, tasks, webhooks_catalogue
from dunning_notifier import repository as repo
from dunning_notifier.contacts import addresses
from dunning_notifier.messages import reminder_cancelled

log = get_logger(__name__)


def recipient_for(stage: StageEscalated) -> str | None:
    """The address a channel delivers to, from the event's snapshot (the dispatcher replaces it with
    the customer's current contacts, if any, when it sends); None where the payload has none for it."""
    c = stage.customer
    return addresses(stage.channel, c.email, (), c.phone, c.postal_address)[0]


async def record_delivery(conn: asyncpg.Connection, event: Event[StageEscalated]) -> None:
    """StageEscalated -> one pending delivery per (invoice, stage, channel), never two; `cancelled` at
    once (ReminderCancelled) if the invoice is stopped for good; nothing if it goes in a notice."""
    check_envelope(event)
    delivery = _delivery(event)
    if delivery is None:
        return
    row = await delivery_inserts.insert_delivery(conn, **delivery)
    await outbox.add_many(conn, _recorded(event.data, row))


async def record_deliveries(conn: asyncpg.Connection, events: list[Event[StageEscalated]]) -> None:
    """`record_delivery` (the reference) for a run of events: one insert for the lot, ending where
    applying them one by one in order ends (the first of two for one (invoice, stage, channel) wins)."""
    for event in events:
        check_envelope(event)
    firsts: dict[tuple[str, str, str, str], tuple[StageEscalated, dict]] = {}
    for event in events:
        delivery = _delivery(event)
        if delivery is not None:
            key = (delivery["tenant_id"], delivery["invoice_id"], delivery["stage"], delivery["channel"])
            if key in firsts:
                _recorded(event.data, None)  # a second one in the run: as if it came after the first
            else:
                firsts[key] = (event.data, delivery)
    rows = {
        r["delivery_id"]: r for r in await delivery_inserts.insert_deliveries(conn, [d for _, d in firsts.values()])
    }
    cancelled = [c for stage, d in firsts.values() for c in _recorded(stage, rows.get(d["delivery_id"]))]
    await outbox.add_many(conn, cancelled)


def _delivery(event: Event[StageEscalated]) -> dict | None:
    """The delivery row a StageEscalated asks for (delivery_inserts.insert_delivery's arguments); None if
    its stage goes in a notice."""
    stage = event.data
    if stage.notice_id is not None:
        log.info("notifier.delivery.in_notice", notice_id=stage.notice_id, stage=stage.stage, stage_id=stage.stage_id)
        return None
    return dict(
        delivery_id=new_id("dlv"),
        tenant_id=stage.tenant_id,
        invoice_id=stage.invoice_id,
        stage_id=stage.stage_id,
        stage=stage.stage,
        channel=stage.channel,
        template=stage.template,
        recipient=recipient_for(stage),
        payload=stage.to_data(),  # what the renderer reads later, in its JSON form
        source_event_id=event.id,
        traceparent=event.traceparent,
    )


def _recorded(stage: StageEscalated, row: asyncpg.Record | None) -> list[ReminderCancelled]:
    """What a delivery's insert comes to (logged): its ReminderCancelled if it was cancelled on arrival."""
    if row is None:
        log.info(
            "notifier.delivery.duplicate_ignored", stage=stage.stage, channel=stage.channel, stage_id=stage.stage_id
        )
        return []
    ids = dict(delivery_id=row["delivery_id"], stage=stage.stage, channel=stage.channel, stage_id=stage.stage_id)
    if row["state"] == "cancelled":
        log.warning("notifier.delivery.cancelled_on_arrival", reason=row["cancel_reason"], **ids)
        return [reminder_cancelled(row)]
    log.info("notifier.delivery.recorded", **ids)
    return []


async def stop_invoice(conn: asyncpg.Connection, event: Event[StagesCancelled]) -> None:
    """StagesCancelled (a terminal stop) -> the invoice's pending deliveries cancelled, for good."""
    check_envelope(event)
    await _apply_stop(conn, event, "stopped", event.data.reason, event.data.cancelled_at)


async def pause_invoice(conn: asyncpg.Connection, event: Event[DunningPaused]) -> None:
    """DunningPaused -> the invoice's pending deliveries cancelled; later ones too until it resumes."""
    check_envelope(event)
    await _apply_stop(conn, event, "paused", event.data.cause, event.data.paused_at)


async def _apply_stop(conn: asyncpg.Connection, event: Event, state: str, reason: str, stopped_at) -> None:
    data = event.data
    rows = await repo.apply_stop(
        conn,
        tenant_id=data.tenant_id,
        invoice_id=data.invoice_id,
        state=state,
        reason=reason,
        cause_event_id=event.id,
        stopped_at=stopped_at,
    )
    cancelled = [r for r in rows if r["state"] == "cancelled"]
    await outbox.add_many(conn, [reminder_cancelled(r) for r in cancelled])
    collections = dict(tenant_id=data.tenant_id, invoice_id=data.invoice_id, reason=reason, cause_event_id=event.id)
    await tasks.cancel_for_stop(conn, **collections, at=stopped_at)  # its open call tasks (TaskCancelled)
    await agency.settled_message(conn, **collections, at=stopped_at)  # a handed-over invoice paid: tell the agency
    await notices.leave_out(
        conn,
        tenant_id=data.tenant_id,
        invoice_id=data.invoice_id,
        state=state,
        reason=reason,
        cause_event_id=event.id,
        stopped_at=stopped_at,
    )
    log.info(
        f"notifier.invoice.{state}",
        reason=reason,
        cancelled=[r["delivery_id"] for r in cancelled],
        mid_attempt=[r["delivery_id"] for r in rows if r["state"] != "cancelled"],
    )


async def resume_invoice(conn: asyncpg.Connection, event: Event[DunningResumed]) -> None:
    """DunningResumed -> the invoice's pause forgotten: deliveries of stages fired from now on are sent
    (the ones the pause cancelled stay cancelled; a terminal stop stays, except the settling one of an
    invoice reopened: cause `settled`, money taken back)."""
    check_envelope(event)
    forget = repo.reopen if event.data.cause == "settled" else repo.resume
    pause = await forget(conn, event.data.tenant_id, event.data.invoice_id)
    log.info("notifier.invoice.resumed", reason=event.data.reason, pause=pause)


async def update_contacts(conn: asyncpg.Connection, event: Event[CustomerUpdated]) -> None:
    """CustomerUpdated -> the customer's contacts row, unless it holds this version or a newer one
    (replays and reordered updates converge on the newest)."""
    customer = event.data
    check_envelope(event)
    applied = await repo.upsert_contact(
        conn,
        tenant_id=customer.tenant_id,
        customer_id=customer.customer_id,
        name=customer.name,
        email=customer.email,
        cc=customer.cc,
        locale=customer.locale,
        timezone=customer.timezone,
        phone=customer.phone,
        postal_address=customer.postal_address,
        version=customer.version,
        updated_at=customer.updated_at,
    )
    log.info(
        "notifier.contacts.updated" if applied else "notifier.contacts.stale_ignored",
        customer_id=customer.customer_id,
        version=customer.version,
    )


HANDLERS = {
    StageEscalated: HandlerSpec(record_delivery, batch=record_deliveries),
    NoticeComposed: HandlerSpec(notices.record_notice),
    StagesCancelled: HandlerSpec(stop_invoice),
    DunningPaused: HandlerSpec(pause_invoice),
    DunningResumed: HandlerSpec(resume_invoice),
    CustomerUpdated: HandlerSpec(update_contacts),
}

# Every event of the webhook catalogue also records its webhook messages (webhooks_catalogue.py).
HANDLERS = webhooks_catalogue.with_webhooks(HANDLERS)
