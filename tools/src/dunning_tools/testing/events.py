"""Events as the services publish them, built for tests: valid against their contract."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from dunning.clock import utcnow
from dunning.events import new_event, validate
from dunning.ids import new_id


def invoice_issued(
    *,
    tenant_id: str,
    invoice_id: str | None = None,
    external_id: str | None = None,
    number: str | None = None,
    currency: str = "EUR",
    amount_due: str | Decimal = "1250.00",
    issued_at: datetime | None = None,
    due_date: date | None = None,
    timezone: str = "Europe/Berlin",
    metadata: dict | None = None,
) -> dict:
    """An InvoiceIssued envelope of `tenant_id`, checked against its schema: a new invoice id unless
    given, issued now unless `issued_at`, due 14 days after it unless `due_date`; the customer is
    Brandt & Söhne GmbH in `timezone`."""
    invoice_id = invoice_id or new_id("inv")
    issued_at = issued_at or utcnow()
    envelope = new_event(
        "dunning.InvoiceIssued.v1",
        {
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "external_id": external_id or f"ext-{invoice_id[-10:]}",
            "number": number or f"INV-{invoice_id[-8:]}",
            "customer": {
                "customer_id": "cus_01JB2F7H9K3M5N7P9Q1R3S5T7V",
                "external_id": "c-1",
                "name": "Brandt & Söhne GmbH",
                "email": "ap@brandt-soehne.example",
                "locale": "de-DE",
                "timezone": timezone,
            },
            "currency": currency,
            "amount_due": str(amount_due),
            "issue_date": issued_at.date(),
            "due_date": due_date or (issued_at + timedelta(days=14)).date(),
            "payment_url": "https://pay.example.com/i/1",
            "metadata": metadata or {},
            "issued_at": issued_at,
        },
        source="/invoice-ingest",
        subject=invoice_id,
        tenant_id=tenant_id,
    )
    validate(envelope)
    return envelope
