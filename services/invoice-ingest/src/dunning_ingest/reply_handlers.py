"""CustomerReplied (notifier): a customer answered a reminder (registered in handlers.HANDLERS).

The reply becomes an entry of the invoice's history (`customer_replied`: who, the subject, an excerpt,
whether it was automatic). When the tenant pauses dunning on a reply (the event's `pause_days`; never
for an automatic answer) a hold is placed on the invoice through the same service a person's hold
goes through (holds.HoldService.place: the acknowledgement fence, HoldPlaced, and with it the
scheduler's DunningPaused and the notifier's cancel guarantee), reason `customer_replied`, ending
`pause_days` after the reply. An invoice no longer open, or a pause already over when the event is
applied, gets the entry but no hold. Runs in the consumer's transaction with the inbox claim, so a
redelivery does nothing.
"""

from datetime import timedelta
from typing import Any

import asyncpg

from dunning.clock import isoformat
from dunning.contracts import CustomerReplied
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.http import Problem
from dunning.logging import get_logger
from dunning_ingest import repository
from dunning_ingest.holds import HoldIn, HoldService
from dunning_ingest.repository.stop_events import StopEvent, record_stop_events

log = get_logger(__name__)
HOLD_REASON = "customer_replied"
PLACED_BY = "notifier (customer reply)"


def reply_entry(r: CustomerReplied) -> StopEvent:
    data = {
        "reply_id": r.reply_id,
        "delivery_id": r.delivery_id,
        "stage": r.stage,
        "channel": r.channel,
        "from": r.from_address,
        "subject": r.mail_subject,
        "excerpt": r.excerpt[:500],
        "auto_reply": r.auto_reply,
        "pause_days": r.pause_days,
    }
    what = "automatic reply" if r.auto_reply else "reply"
    reason = f"{what} from {r.from_address}: {r.mail_subject}"[:500]
    return StopEvent(r.invoice_id, "customer_replied", r.received_at, r.reply_id, reason, None, data)


async def customer_replied(conn: asyncpg.Connection, event: Event[CustomerReplied]) -> None:
    """CustomerReplied -> a history entry, and a hold when the tenant pauses on a reply."""
    check_envelope(event)
    r = event.data
    invoice = await repository.invoice_ref(conn, r.invoice_id)
    if invoice is None or invoice["tenant_id"] != event.tenant_id or r.tenant_id != event.tenant_id:
        raise Rejected(f"unknown invoice {r.invoice_id} for tenant {event.tenant_id}")
    await record_stop_events(conn, r.tenant_id, event.id, [reply_entry(r)])
    if r.auto_reply or r.pause_days is None:
        log.info("ingest.reply.recorded", invoice_id=r.invoice_id, auto_reply=r.auto_reply)
        return

    async def in_this_transaction(tenant_id: str, key: Any, fingerprint: Any, work: Any) -> Any:
        return await work(conn)  # the consumer's transaction: no idempotency key (the inbox dedupes)

    hold = HoldIn(
        invoice_id=r.invoice_id,
        reason=HOLD_REASON,
        placed_by=PLACED_BY,
        ends_at=isoformat(r.received_at + timedelta(days=r.pause_days)),  # the model takes text, as from HTTP
    )
    try:
        async with conn.transaction():  # a savepoint: a refused hold leaves the entry in place
            await HoldService(None, in_this_transaction).place(r.tenant_id, hold, key=None, fingerprint=None)
    except Problem as exc:  # not open any more, or the pause already over
        log.info("ingest.reply.no_hold", invoice_id=r.invoice_id, status=exc.status, detail=exc.detail)
        return
    log.info("ingest.reply.paused", invoice_id=r.invoice_id, pause_days=r.pause_days)
