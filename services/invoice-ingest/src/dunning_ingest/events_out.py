"""The events invoice-ingest publishes (through the outbox): InvoiceIssued."""

from datetime import datetime
from typing import Any

from dunning.events import new_event
from dunning.money import format_amount

SOURCE = "/invoice-ingest"
INVOICE_ISSUED = "dunning.InvoiceIssued.v1"


def invoice_issued(tenant_id: str, invoice_id: str, customer_id: str, inv: Any, issued_at: datetime) -> dict[str, Any]:
    c = inv.customer
    data = {
        "invoice_id": invoice_id,
        "tenant_id": tenant_id,
        "external_id": inv.external_id,
        "number": inv.number,
        "customer": {"customer_id": customer_id, "external_id": c.external_id, "name": c.name, "email": c.email,
                     "locale": c.locale, "timezone": c.timezone},
        "currency": inv.currency,
        "amount_due": format_amount(inv.amount_due, inv.currency),
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "payment_url": inv.payment_url,
        "metadata": inv.metadata,
        "issued_at": issued_at,
    }
    return new_event(INVOICE_ISSUED, data, source=SOURCE, subject=invoice_id, tenant_id=tenant_id)
