"""Events as the services publish them, built for tests: valid against their contract."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from dunning.clock import utcnow
from dunning.events import new_event, validate
from dunning.ids import new_id


def _event(event_type: str, source: str, data: dict) -> dict:
    """An envelope of `data` from `source`, about the invoice and tenant the data names."""
    return new_event(event_type, data, source=source, subject=data["invoice_id"], tenant_id=data["tenant_id"])


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
    envelope = _event(
        "dunning.InvoiceIssued.v1",
        "/invoice-ingest",
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
    )
    validate(envelope)
    return envelope


def planned_stage(
    stage_id: str,
    stage: str,
    sequence: int,
    scheduled_at: datetime,
    *,
    channel: str = "email",
    state: str = "scheduled",
    reason: str | None = None,
) -> dict:
    """One stage of a DunningPlanned's plan."""
    return {
        "stage_id": stage_id,
        "stage": stage,
        "sequence": sequence,
        "channel": channel,
        "scheduled_at": scheduled_at,
        "state": state,
        "reason": reason,
    }


def dunning_planned(
    *,
    tenant_id: str,
    invoice_id: str,
    stages: list[dict],
    planned_at: datetime,
    policy_id: str = "pol_test",
    policy_version: int = 1,
) -> dict:
    """A DunningPlanned envelope of this invoice with these stages (see planned_stage)."""
    return _event(
        "dunning.DunningPlanned.v1",
        "/scheduler",
        {
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "policy_id": policy_id,
            "policy_version": policy_version,
            "planned_at": planned_at,
            "stages": stages,
        },
    )


def stage_escalated(
    *,
    tenant_id: str,
    invoice_id: str,
    stage_id: str,
    scheduled_at: datetime,
    fired_at: datetime,
    stage: str = "soft",
    sequence: int = 1,
    channel: str = "email",
) -> dict:
    """A StageEscalated envelope of this invoice's stage, with a fixed invoice and customer snapshot
    (EUR 100.00, due 2 Dec 2026; a customer in London)."""
    return _event(
        "dunning.StageEscalated.v1",
        "/scheduler",
        {
            "stage_id": stage_id,
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "stage": stage,
            "sequence": sequence,
            "channel": channel,
            "template": stage,
            "scheduled_at": scheduled_at,
            "fired_at": fired_at,
            "invoice": {
                "external_id": invoice_id,
                "number": invoice_id,
                "currency": "EUR",
                "amount_due": "100.00",
                "balance": "100.00",
                "issue_date": "2026-11-02",
                "due_date": "2026-12-02",
                "payment_url": None,
            },
            "customer": {
                "customer_id": "cus_test00000000",
                "external_id": "C1",
                "name": "Customer",
                "email": "ap@example.com",
                "locale": "en-GB",
                "timezone": "Europe/London",
            },
        },
    )


def reminder_sent(
    *,
    tenant_id: str,
    invoice_id: str,
    stage_id: str,
    sent_at: datetime,
    delivery_id: str | None = None,
    recipient: str = "ap@example.com",
    provider_message_id: str = "m-1",
    stage: str = "soft",
    channel: str = "email",
) -> dict:
    """A ReminderSent envelope of this invoice's stage (a new delivery id unless given)."""
    return _event(
        "dunning.ReminderSent.v1",
        "/notifier",
        {
            "delivery_id": delivery_id or new_id("dlv"),
            "stage_id": stage_id,
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "stage": stage,
            "channel": channel,
            "recipient": recipient,
            "provider_message_id": provider_message_id,
            "sent_at": sent_at,
        },
    )


def payment_received(
    invoice_id: str,
    *,
    tenant_id: str,
    balance: str,
    settled: bool,
    acknowledged_at: datetime | None = None,
    currency: str = "EUR",
    amount: str = "100.00",
) -> dict:
    """A PaymentReceived envelope: `amount` applied in full to the invoice, leaving `balance`;
    received and acknowledged now unless `acknowledged_at`."""
    acknowledged_at = acknowledged_at or utcnow()
    return _event(
        "dunning.PaymentReceived.v1",
        "/reconciliation",
        {
            "payment_id": new_id("pay"),
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "invoice_external_id": "ext",
            "source": "api",
            "source_reference": "ref-1",
            "currency": currency,
            "amount": amount,
            "amount_applied": amount,
            "balance_remaining": balance,
            "settled": settled,
            "received_at": acknowledged_at,
            "acknowledged_at": acknowledged_at,
        },
    )
