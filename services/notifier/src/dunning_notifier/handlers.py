"""What the notifier reacts to. Handlers run inside the consumer's transaction (inbox dedupe by
event id included) and only record: a delivery to make (the dispatcher sends, outside any consumer
transaction), or a customer's current contacts (the dispatcher reads them when it sends).
The table at the end is the whole of it."""

import asyncpg

from dunning.contracts import CustomerUpdated, StageEscalated
from dunning.events import Event
from dunning.handler_table import HandlerSpec, check_envelope
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import repository as repo
from dunning_notifier.contacts import addresses

log = get_logger(__name__)


def recipient_for(stage: StageEscalated) -> str | None:
    """The address a channel delivers to, from the event's snapshot (the dispatcher replaces it with
    the customer's current contacts, if any, when it sends); None where the payload has none for it."""
    return addresses(stage.channel, stage.customer.email)[0]


async def record_delivery(conn: asyncpg.Connection, event: Event[StageEscalated]) -> None:
    """StageEscalated -> one pending delivery per (invoice, stage, channel), never two."""
    stage = event.data
    check_envelope(event)
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
        version=customer.version,
        updated_at=customer.updated_at,
    )
    log.info(
        "notifier.contacts.updated" if applied else "notifier.contacts.stale_ignored",
        customer_id=customer.customer_id,
        version=customer.version,
    )


HANDLERS = {
    StageEscalated: HandlerSpec(record_delivery),
    CustomerUpdated: HandlerSpec(update_contacts),
}
