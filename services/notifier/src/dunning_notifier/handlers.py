"""What the notifier reacts to. Handlers run inside the consumer's transaction (inbox dedupe by
event id included) and only record work: the dispatcher sends, outside any consumer transaction."""

import asyncpg

from dunning.consumer import Rejected
from dunning.events import Event
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import repository as repo

log = get_logger(__name__)


def recipient_for(channel: str, data: dict) -> str | None:
    """The address a channel delivers to; None where the payload has none for it (yet)."""
    if channel == "email":
        return data["customer"].get("email") or None
    return None


async def record_delivery(conn: asyncpg.Connection, event: Event) -> None:
    """StageEscalated -> one pending delivery per (invoice, stage, channel), never two."""
    data = event.data
    if data["tenant_id"] != event.tenant_id or data["invoice_id"] != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    delivery_id = await repo.insert_delivery(
        conn,
        delivery_id=new_id("dlv"),
        tenant_id=data["tenant_id"],
        invoice_id=data["invoice_id"],
        stage_id=data["stage_id"],
        stage=data["stage"],
        channel=data["channel"],
        template=data["template"],
        recipient=recipient_for(data["channel"], data),
        payload=data,
        source_event_id=event.id,
        traceparent=event.traceparent,
    )
    if delivery_id is None:
        log.info("notifier.delivery.duplicate_ignored", stage=data["stage"], channel=data["channel"],
                 stage_id=data["stage_id"])
    else:
        log.info("notifier.delivery.recorded", delivery_id=delivery_id, stage=data["stage"],
                 channel=data["channel"], stage_id=data["stage_id"])


HANDLERS = {
    "dunning.StageEscalated.v1": record_delivery,
}
