"""Consolidated notices: NoticeComposed (one notice per customer and channel listing every overdue
invoice) in, one e-mail per notice out, sent once; the scheduler's StageEscalated events of its
stages carry `notice_id` and make no delivery of their own (handlers.py).

The promises hold per invoice, as for single reminders (handlers.py, the cancel guarantee):
- a stop of an invoice (StagesCancelled; a DunningPaused the scheduler applied after composing the
  notice) marks its items in every notice not sent yet; every attempt (the first and each retry)
  lists only the unmarked items, read under the claim's lock, so an invoice paid a moment before
  the notice goes is left out of it; an invoice stopped after the notice went changes nothing;
- a notice with no stage item left is `cancelled` and sends nothing (ReminderCancelled per stage);
- on send: NoticeSent (the invoices it listed, the ones left out) and one ReminderSent per stage
  item it listed (ReminderCancelled for the stage items left out); on a final failure ReminderFailed
  per stage item it listed. Each stage item gets exactly one of these (`notice_items.outcome`).
The sending loop itself: notice_sender.py; SQL: notice_repository.py.
"""

from collections.abc import Mapping
from typing import Any

import asyncpg

from dunning import outbox
from dunning.contracts import NoticeComposed, NoticeSent, ReminderFailed, ReminderSent
from dunning.events import Event
from dunning.handler_table import check_envelope
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import notice_repository as notice_repo
from dunning_notifier.contacts import addresses
from dunning_notifier.messages import reminder_cancelled

log = get_logger(__name__)
TEMPLATE = "consolidated"


async def record_notice(conn: asyncpg.Connection, event: Event[NoticeComposed]) -> None:
    """NoticeComposed -> one pending notice, never two (its id); its items of invoices already
    stopped marked left out, and the notice `cancelled` at once if no stage item is left."""
    notice = event.data
    check_envelope(event)
    recorded = await notice_repo.insert_notice(
        conn,
        notice_id=notice.notice_id,
        delivery_id=new_id("dlv"),
        tenant_id=notice.tenant_id,
        customer_id=notice.customer_id,
        channel=notice.channel,
        composed_at=notice.composed_at,
        recipient=addresses(notice.channel, notice.customer.email)[0],
        payload=notice.to_data(),
        source_event_id=event.id,
        traceparent=event.traceparent,
        items=[(i.invoice_id, i.stage_id, i.stage, i.sequence) for i in notice.items],
    )
    if not recorded:
        log.info("notifier.notice.duplicate_ignored", notice_id=notice.notice_id)
        return
    if not any(i.stage_id for i in notice.items):
        log.warning("notifier.notice.without_stages", notice_id=notice.notice_id)
    await notice_repo.cancel_empty(conn, [notice.notice_id])
    cancelled = await notice_repo.cancel_left_out(conn, [notice.notice_id])
    await outbox.add_many(conn, [reminder_cancelled(r) for r in cancelled])
    log.info(
        "notifier.notice.recorded",
        notice_id=notice.notice_id,
        customer_id=notice.customer_id,
        items=len(notice.items),
        left_out=[r["invoice_id"] for r in cancelled],
    )


async def leave_out(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    invoice_id: str,
    state: str,
    reason: str,
    cause_event_id: str,
    stopped_at,
) -> None:
    """A stop of an invoice (handlers._apply_stop, same transaction): its items left out of every
    notice not sent yet; a pending notice's stage items of it cancelled now (a mid-attempt one's when
    its attempt ends), a notice with no stage item left cancelled."""
    touched = await notice_repo.mark_stopped(
        conn,
        tenant_id=tenant_id,
        invoice_id=invoice_id,
        state=state,
        reason=reason,
        cause_event_id=cause_event_id,
        stopped_at=stopped_at,
    )
    if not touched:
        return
    emptied = await notice_repo.cancel_empty(conn, touched)
    cancelled = await notice_repo.cancel_left_out(conn, touched)
    await outbox.add_many(conn, [reminder_cancelled(r) for r in cancelled])
    log.info(
        "notifier.notice.invoice_left_out",
        invoice_id=invoice_id,
        reason=reason,
        notices=touched,
        cancelled_notices=[r["notice_id"] for r in emptied if r["state"] == "cancelled"],
    )


# --- the events, from the rows notice_repository's outcome writes return -------------------------


def reminder_sent(row: Mapping[str, Any]) -> ReminderSent:
    return ReminderSent(
        row["delivery_id"],
        row["stage_id"],
        row["invoice_id"],
        row["tenant_id"],
        row["stage"],
        row["channel"],
        row["recipient"] or "",
        (row["provider_message_id"] or "")[:500],
        row["sent_at"],
        notice_id=row["notice_id"],
    )


def reminder_failed(row: Mapping[str, Any], error_code: str, error: str, permanent: bool) -> ReminderFailed:
    return ReminderFailed(
        row["delivery_id"],
        row["stage_id"],
        row["invoice_id"],
        row["tenant_id"],
        row["stage"],
        row["channel"],
        row["recipient"][:320] if row["recipient"] else None,
        error_code,
        (error or error_code)[:2000],
        permanent,
        max(row["attempts"], 1),
        row["outcome_at"],
        notice_id=row["notice_id"],
    )


def notice_sent(
    payload: Mapping[str, Any], recipient: str, provider_message_id: str, lists: tuple[list[str], list[str]], sent_at
) -> NoticeSent:
    """NoticeSent: the invoices the notice went with, and the notice's others (left out)."""
    listed, left_out = lists
    return NoticeSent(
        payload["notice_id"],
        payload["tenant_id"],
        payload["customer_id"],
        payload["channel"],
        recipient,
        provider_message_id[:500],
        tuple(listed),
        tuple(left_out),
        sent_at,
    )
