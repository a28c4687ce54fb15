"""What reconciliation reacts to on Kafka. Handlers run inside the consumer runner's transaction
(after its inbox dedupe), so everything they write commits with the consumed offset."""

from datetime import datetime
from decimal import Decimal

import asyncpg

from dunning.consumer import Rejected
from dunning.events import Event
from dunning.logging import get_logger

from dunning_reconciliation import reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.invoice_batch import on_invoices_issued

log = get_logger(__name__)


async def on_invoice_issued(conn: asyncpg.Connection, event: Event) -> None:
    """Remember the invoice, then apply the payments that arrived for it before it was known."""
    data = event.data
    if data["tenant_id"] != event.tenant_id:
        raise Rejected(f"data.tenant_id {data['tenant_id']!r} differs from the envelope's tenantid")
    tenant_id, invoice_id = event.tenant_id, data["invoice_id"]
    external_id, number = data["external_id"], data["number"]
    await reconcile.lock_invoice_keys(conn, tenant_id, invoice_id, external_id, number)
    stored = await repo.insert_invoice(
        conn, invoice_id=invoice_id, tenant_id=tenant_id, external_id=external_id, number=number,
        currency=data["currency"], amount_due=Decimal(data["amount_due"]), metadata=data["metadata"],
        issued_at=datetime.fromisoformat(data["issued_at"]),
    )
    if not stored:
        log.info("reconciliation.invoice.already_known", invoice_id=invoice_id)
        return
    applied = await reconcile.apply_pending(conn, tenant_id, invoice_id, external_id, number)
    log.info("reconciliation.invoice.stored", invoice_id=invoice_id, late_payments=applied)


HANDLERS = {
    "dunning.InvoiceIssued.v1": on_invoice_issued,
}

# A run of InvoiceIssued in one call (same end state; see invoice_batch).
BATCH_HANDLERS = {
    "dunning.InvoiceIssued.v1": on_invoices_issued,
}
