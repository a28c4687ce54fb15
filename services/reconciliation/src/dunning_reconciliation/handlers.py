"""What reconciliation reacts to on Kafka. Handlers run inside the consumer runner's transaction
(after its inbox dedupe), so everything they write commits with the consumed offset.

The table at the end is the whole of it: InvoiceIssued, one by one (`on_invoice_issued`, the
reference) or a run at a time (`invoice_batch.on_invoices_issued`, same end state, held equal by
tests/integration/test_invoice_batch.py); the changes invoice-ingest makes to an invoice
(InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff), version-guarded, in `invoice_changes`; an upheld
dispute's credit note (DisputeResolved) in `disputes`.
"""

import asyncpg

from dunning.contracts import (
    DisputeResolved,
    InvoiceIssued,
    InvoiceUpdated,
    InvoiceVoided,
    InvoiceWrittenOff,
    WatermarkWanted,
)
from dunning.events import Event
from dunning.handler_table import HandlerSpec
from dunning.logging import get_logger
from dunning.watermark import WANTED_HANDLER
from dunning_reconciliation import reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.credits import apply_customer_credit
from dunning_reconciliation.disputes import on_dispute_resolved
from dunning_reconciliation.invoice_batch import issued, on_invoices_issued
from dunning_reconciliation.invoice_changes import on_invoice_updated, on_invoice_voided, on_invoice_written_off

log = get_logger(__name__)


async def on_invoice_issued(conn: asyncpg.Connection, event: Event[InvoiceIssued]) -> None:
    """Remember the invoice, then apply the payments that arrived for it before it was known, then
    its customer's held credit."""
    invoice = issued(event)
    tenant_id, invoice_id = event.tenant_id, invoice.invoice_id
    external_id, number = invoice.external_id, invoice.number
    await reconcile.lock_invoice_keys(conn, tenant_id, invoice_id, external_id, number)
    stored = await repo.insert_invoice(
        conn,
        invoice_id=invoice_id,
        tenant_id=tenant_id,
        external_id=external_id,
        number=number,
        currency=invoice.currency,
        amount_due=invoice.amount_due,
        metadata=invoice.metadata,
        issued_at=invoice.issued_at,
        customer_id=invoice.customer.customer_id,
        due_date=invoice.due_date,
        customer_name=invoice.customer.name,  # matching: a payer named as the customer
    )
    if not stored:
        log.info("reconciliation.invoice.already_known", invoice_id=invoice_id)
        return
    applied = await reconcile.apply_pending(conn, tenant_id, invoice_id, external_id, number)
    credited = await apply_customer_credit(conn, tenant_id, invoice.customer.customer_id, invoice_id=invoice_id)
    log.info("reconciliation.invoice.stored", invoice_id=invoice_id, late_payments=applied, credit_applied=credited)


HANDLERS = {
    InvoiceIssued: HandlerSpec(on_invoice_issued, batch=on_invoices_issued),
    InvoiceUpdated: HandlerSpec(on_invoice_updated),
    InvoiceVoided: HandlerSpec(on_invoice_voided),
    InvoiceWrittenOff: HandlerSpec(on_invoice_written_off),
    DisputeResolved: HandlerSpec(on_dispute_resolved),
    WatermarkWanted: WANTED_HANDLER,  # when the scheduler next needs a statement (dunning.watermark.Wanted)
}
