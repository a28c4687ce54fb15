"""The agency stop: an invoice handed to a collection agency (the notifier's InvoiceHandedToAgency)
is stopped like a void or a write-off (every pending or paused stage cancelled in one statement under
the invoice's row lock, StagesCancelled with reason `with_agency`, its pauses ended), so the platform's
own reminders stop; the notifier's last mile cancels the deliveries not yet attempted (but the
`handed_over` notice to the debtor, which this stop follows). The invoice stays open here: a payment
still settles it through the money handlers (docs/collections.md)."""

import asyncpg

from dunning.contracts import InvoiceHandedToAgency
from dunning.events import Event
from dunning.logging import get_logger
from dunning_scheduler import stopping
from dunning_scheduler.repository import agency as repo

log = get_logger(__name__)
WITH_AGENCY = "with_agency"


async def on_invoice_handed_to_agency(conn: asyncpg.Connection, event: Event[InvoiceHandedToAgency]) -> None:
    invoice_id, tenant_id = stopping.checked(event)
    row, cancelled = await repo.hand_to_agency(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        handed_over_at=event.data.handed_over_at,
        reason=WITH_AGENCY,
    )
    if row is None:
        await stopping.owned(conn, event)  # another tenant's invoice is Rejected
        log.info("scheduler.agency.ignored", case_id=event.data.case_id)
        return
    log.info("scheduler.agency.handed_over", case_id=event.data.case_id, stopped=row["newly"])
    await stopping.announce(conn, event, WITH_AGENCY, row, cancelled)
