"""The public webhook event catalogue, and how the internal events become webhook messages.

A tenant subscribes an endpoint to public event types (`invoice.paid`, `payment.received`, ...).
Each maps from one internal event type (dunning.contracts), sometimes only for some of its values:

- `invoice.paid` is StagesCancelled with reason `invoice_settled`: the scheduler publishes it once
  per settling, whatever settled the invoice (a payment, a customer credit, several payments), even
  with no stage left to cancel; a PaymentReceived with `settled` would miss a credit applied.
- `invoice.reopened` is DunningResumed with cause `settled` (money taken back from a settled
  invoice); every other DunningResumed is `dunning.resumed`.

The message's `data` is the internal event's `data` as its JSON Schema fixes it
(schemas/events/<Name>.v1.schema.json), so the public payload is versioned with the event. The
table at the end extends the notifier's handler table (handlers.py): `with_webhooks` wraps a handler
the notifier already has for a type, or adds one, so that the consumer's transaction (inbox dedupe
included) records one `webhook_messages` row per (event, subscribed endpoint), never two.
Optional internal types (another area's events: agency hand-over, call tasks) are mapped when their
contract exists in this build.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from dunning import contracts
from dunning.clock import isoformat
from dunning.events import Event
from dunning.handler_table import HandlerSpec, HandlerTable
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning_notifier import webhooks_repository as repo

log = get_logger(__name__)

REMINDER_DUE = "reminder.due"  # the `webhook` reminder channel's type (webhooks_channel.py), not an event's


@dataclass(frozen=True)
class Mapping:
    """Internal event type -> public type, for the events `applies` accepts (all when None)."""

    internal: str  # the contract's TYPE
    public: str
    description: str
    applies: Callable[[Any], bool] | None = None


MAPPINGS: tuple[Mapping, ...] = (
    Mapping(
        "dunning.StagesCancelled.v1",
        "invoice.paid",
        "The invoice is settled (its balance reached zero, by payments or a credit).",
        lambda d: d.reason == "invoice_settled",
    ),
    Mapping(
        "dunning.DunningResumed.v1",
        "invoice.reopened",
        "A settled invoice is open again: money was taken back (refund, chargeback, allocation undone).",
        lambda d: d.cause == "settled",
    ),
    Mapping("dunning.PaymentReceived.v1", "payment.received", "A payment was allocated to the invoice."),
    Mapping("dunning.PaymentReversed.v1", "payment.reversed", "Money was taken back: refund, chargeback, failure."),
    Mapping("dunning.ReminderSent.v1", "reminder.sent", "A reminder went out."),
    Mapping("dunning.ReminderFailed.v1", "reminder.failed", "A reminder could not be sent; no more attempts."),
    Mapping("dunning.ReminderCancelled.v1", "reminder.cancelled", "A reminder was cancelled by a stop."),
    Mapping("dunning.PromiseMade.v1", "promise.made", "The customer promised to pay by a date."),
    Mapping("dunning.PromiseBroken.v1", "promise.broken", "The promise's deadline passed, not paid."),
    Mapping("dunning.PromiseKept.v1", "promise.kept", "The promised amount was paid in time."),
    Mapping("dunning.DisputeOpened.v1", "dispute.opened", "The customer disputes the invoice."),
    Mapping("dunning.DisputeResolved.v1", "dispute.resolved", "The dispute is resolved."),
    Mapping(
        "dunning.DunningPaused.v1", "dunning.paused", "Reminders are paused (hold, dispute, promise, payment plan)."
    ),
    Mapping(
        "dunning.DunningResumed.v1",
        "dunning.resumed",
        "Reminders resume after a pause.",
        lambda d: d.cause != "settled",
    ),
    Mapping("dunning.InvoiceHandedToAgency.v1", "invoice.with_agency", "The invoice went to a collection agency."),
    Mapping("dunning.TaskCreated.v1", "task.created", "A call task was created for a collector."),
    Mapping("dunning.CallTaskCompleted.v1", "task.completed", "A collector completed a call task."),
)


def _available(mapping: Mapping) -> bool:
    record_type = contracts.BY_TYPE.get(mapping.internal)
    if record_type is None:
        return False
    try:
        record_type.topic()
    except Exception:  # a contract whose topic is not in the catalogue yet
        return False
    return True


ACTIVE: tuple[Mapping, ...] = tuple(m for m in MAPPINGS if _available(m))
EVENT_TYPES: dict[str, str] = {
    **{m.public: m.description for m in ACTIVE},
    REMINDER_DUE: "A reminder stage on the `webhook` channel: the reminder itself, for your system to send.",
}


def public_types(internal_type: str, data: Any) -> list[str]:
    """The public types an internal event is published as (none, one; never more for now)."""
    return [m.public for m in ACTIVE if m.internal == internal_type and (m.applies is None or m.applies(data))]


def body(public_type: str, timestamp: str, data: dict[str, Any]) -> str:
    """The JSON body sent (and signed): `{"type", "timestamp", "data"}`."""
    return orjson.dumps({"type": public_type, "timestamp": timestamp, "data": data}).decode()


async def record_messages(conn: asyncpg.Connection, event: Event) -> None:
    """One pending message per endpoint of the tenant subscribed to the event's public type(s)."""
    rows = []
    for public in public_types(event.type, event.data):
        endpoints = await repo.subscribed(conn, event.tenant_id, public)
        if not endpoints:
            continue
        text = body(public, isoformat(event.time), event.data.to_data())
        rows += [(new_id("msg"), event.tenant_id, e["endpoint_id"], public, event.id, text) for e in endpoints]
    recorded = await repo.insert_messages(conn, rows)
    if recorded:
        log.info("notifier.webhooks.recorded", event_type=event.type, event_id=event.id, messages=recorded)


async def record_messages_batch(conn: asyncpg.Connection, events: list[Event]) -> None:
    """`record_messages` (the reference) for a run of events: the subscriptions of every (tenant, public
    type) in the run in one query, the messages in one insert (the same rows, message ids aside)."""
    wanted = [(event, public) for event in events for public in public_types(event.type, event.data)]
    if not wanted:
        return
    subscribed = await repo.subscribed_many(conn, sorted({(event.tenant_id, public) for event, public in wanted}))
    rows = []
    for event, public in wanted:
        endpoints = subscribed.get((event.tenant_id, public))
        if endpoints:
            text = body(public, isoformat(event.time), event.data.to_data())
            rows += [(new_id("msg"), event.tenant_id, endpoint, public, event.id, text) for endpoint in endpoints]
    recorded = await repo.insert_messages(conn, rows)
    if recorded:
        log.info("notifier.webhooks.recorded", events=len(events), messages=recorded)


def _also_record(each: Callable[..., Any]) -> Callable[..., Any]:
    async def each_and_record(conn: asyncpg.Connection, event: Event, **deps: Any) -> None:
        await each(conn, event, **deps)
        await record_messages(conn, event)

    each_and_record.__name__ = f"{getattr(each, '__name__', 'handler')}_and_webhooks"
    return each_and_record


def _also_record_batch(batch: Callable[..., Any]) -> Callable[..., Any]:
    async def batch_and_record(conn: asyncpg.Connection, events: list[Event], **deps: Any) -> None:
        await batch(conn, events, **deps)
        await record_messages_batch(conn, events)

    batch_and_record.__name__ = f"{getattr(batch, '__name__', 'handler')}_and_webhooks"
    return batch_and_record


def with_webhooks(table: HandlerTable) -> dict[Any, HandlerSpec]:
    """The handler table, each catalogue type also recording its webhook messages. A type the notifier
    reads only for webhooks skips the inbox (the messages' unique (endpoint, source event) makes a
    redelivery record nothing) and is applied a run at a time (record_messages_batch): most tenants
    subscribe to little, and these are most of what the notifier consumes. A type it already handles
    keeps its handlers (and inbox), each and its batch, if any, also recording."""
    extended: dict[Any, HandlerSpec] = dict(table)
    for internal in dict.fromkeys(m.internal for m in ACTIVE):
        record_type = contracts.BY_TYPE[internal]
        spec = extended.get(record_type)
        if spec is None:
            extended[record_type] = HandlerSpec(record_messages, batch=record_messages_batch, inbox=False)
        else:
            batch = None if spec.batch is None else _also_record_batch(spec.batch)
            extended[record_type] = replace(spec, each=_also_record(spec.each), batch=batch, inbox=True)
    return extended
