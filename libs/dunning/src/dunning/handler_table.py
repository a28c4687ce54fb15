"""A service's handler table: what it reacts to, one entry per event type (the end of its `handlers.py`).

Event record type (`dunning.contracts`) -> `HandlerSpec(each, batch=..., inbox=...)`. The consumer runner
(`dunning.consumer`) takes the table and derives the topics it consumes from it.
- `batch` (optional) mirrors `each` for a run of consecutive events of that type (set-based SQL);
  `each` remains the reference, and a parity test per service holds the two equal.
- `inbox=False`: the handler is idempotent by construction (a watermark: "greatest wins") and skips
  the inbox: a heartbeat a few times a second would only fill it.
- `wakes=False`: its events alone are not work that keeps the consumer's fetches short
  (`dunning.idle_fetch`): a gate heartbeat the service may read one idle fetch wait late.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dunning import contracts

# (conn, event) / (conn, events); the table may name dependencies as keyword parameters, bound by the
# service's bootstrap before the runner sees them (see dunning_scheduler.bootstrap.inject).
Handler = Callable[..., Awaitable[None]]
BatchHandler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class HandlerSpec:
    """How a service reacts to one event type: `each` applies one event (the reference); `batch`, if
    given, applies a run of consecutive events of the type with the same result; `inbox=False` for
    a handler idempotent by construction, which skips the inbox; `wakes=False` for events that do
    not end the consumer's idle spell."""

    each: Handler
    batch: BatchHandler | None = None
    inbox: bool = True
    wakes: bool = True


HandlerTable = Mapping[Any, HandlerSpec]  # record type (dunning.contracts) -> spec


def without_batches(table: HandlerTable) -> HandlerTable:
    """The table with its per-event handlers only (parity tests and benches compare the two)."""
    return {t: replace(spec, batch=None) for t, spec in table.items()}


def topics_of(table: HandlerTable, settings: Any = None) -> list[str]:
    """The topics a table's event types travel on, in a stable order: the catalogue's, unless the
    settings name another for it (a field `<name>_topic`, e.g. `invoices_topic` for
    `dunning.invoices.v1`, whose default is the catalogue's)."""
    topics = {contracts.topic(record_type) for record_type in table}
    return sorted(getattr(settings, f"{t.split('.')[1]}_topic", t) for t in topics)


class Rejected(Exception):
    """Raised by a handler: this message can never be applied; dead-letter it with this reason."""


def check_envelope(event: Any) -> None:
    """Rejected unless an event's data names the tenant and the subject its envelope names (the
    invoice id; the customer id of a customer event): a message whose two halves disagree is never
    applied."""
    data = event.data
    if data.tenant != event.tenant_id or data.subject != event.subject:
        key = "customer_id" if event.subject.startswith("cus_") else "invoice_id"
        raise Rejected(f"data.tenant_id/{key} disagree with the envelope's tenantid/subject")
