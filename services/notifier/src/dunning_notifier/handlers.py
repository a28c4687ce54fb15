"""What the notifier reacts to. Handlers run inside the consumer's transaction (inbox dedupe by
event id included) and only record work: the dispatcher sends, outside any consumer transaction.
The table at the end is the whole of it."""

import asyncpg

from dunning.contracts import StageEscalated
from dunning.events import Event
from dunning.handler_table import HandlerSpec, Rejected
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import repository as repo

log = get_logger(__name__)


def recipient_for(stage: StageEscalated) -> str | None:
    """The address a channel delivers to; None where the payload has none for it (yet)."""
    if stage.channel == "email":
        return stage.customer.email or None
    return None


async def record_delivery(conn: asyncpg.Connection, event: Event[StageEscalated]) -> None:
    """StageEscalated -> one pending delivery per (invoice, stage, channel), never two."""
    stage = event.data
    if stage.tenant_id != event.tenant_id or stage.invoice_id != event.subject:
        raise Rejected("data.tenant_id/invoice_id disagree with the envelope's tenantid/subject")
    delivery_id = await repo.insert_delivery(
        conn,
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
    if delivery_id is None:
        log.info(
            "notifier.delivery.duplicate_ignored", stage=stage.stage, channel=stage.channel, stage_id=stage.stage_id
        )
    else:
        log.info(
            "notifier.delivery.recorded",
            delivery_id=delivery_id,
            stage=stage.stage,
            channel=stage.channel,
            stage_id=stage.stage_id,
        )


HANDLERS = {
    StageEscalated: HandlerSpec(record_delivery),
}
