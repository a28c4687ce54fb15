"""What every stop of an invoice shares (the handlers of invoices and of money): the event's invoice
checked against its envelope and its tenant, and a terminal stop announced (StagesCancelled, the
invoice's pauses ended)."""

from datetime import datetime

import asyncpg

from dunning import outbox
from dunning.clock import utcnow
from dunning.events import Event
from dunning.handler_table import Rejected, check_envelope
from dunning.logging import get_logger
from dunning_scheduler import messages, pauser, repository
from dunning_scheduler.planning import CREDITED, SETTLED

log = get_logger(__name__)


def checked(event: Event) -> tuple[str, str]:
    """The invoice and tenant an invoice or payments event is about, its data agreeing with its envelope."""
    check_envelope(event)
    return event.subject, event.tenant_id


async def owned(conn: asyncpg.Connection, event: Event) -> asyncpg.Record | None:
    """The invoice as held (None: unknown); another tenant's invoice is Rejected."""
    existing = await repository.invoice_owner(conn, event.subject)
    if existing is not None and existing["tenant_id"] != event.tenant_id:
        raise Rejected(f"invoice {event.subject} belongs to another tenant")
    return existing


async def announce(
    conn: asyncpg.Connection, event: Event, reason: str, row: asyncpg.Record, rows: list[asyncpg.Record]
) -> datetime | None:
    """A terminal stop this event made (`row["newly"]`) of a planned invoice: StagesCancelled with
    the timers it cancelled, even none (the notifier learns every stop from it), and the invoice's
    pauses end (pauser.stopped). Returns when they were cancelled (None: no stop, or none left)."""
    if not row["newly"] or row["planned_at"] is None:
        return None
    await pauser.stopped(conn, event.subject, reason, paid=reason in (SETTLED, CREDITED))
    cancelled_at = (rows[0]["cancelled_at"] if rows else None) or utcnow()
    await outbox.add(
        conn,
        messages.stages_cancelled(
            tenant_id=event.tenant_id,
            invoice_id=event.subject,
            reason=reason,
            cause_event_id=event.id,
            cancelled_at=cancelled_at,
            rows=rows,
        ),
    )
    log.info("scheduler.stages.cancelled", reason=reason, count=len(rows))
    return cancelled_at if rows else None
