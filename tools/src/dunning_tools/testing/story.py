"""The dunning story told through the public APIs, for the end-to-end tests and `make demo`: a policy
of reminders seconds apart, an invoice as an accounting system posts it, and a payment processor's
signed invoice.paid webhook."""

import json
import time
from datetime import date, timedelta

import httpx

from dunning_reconciliation.stripe_signature import sign

STAGES = ("pre_due", "soft", "firm", "final", "collections")


def seconds_policy(*offsets: int) -> dict:
    """The five default stages, each `offsets` seconds after the invoice is issued (days around the
    due date in production), so that a whole story takes seconds."""
    stages = [{"name": name, "offset": f"PT{s}S"} for name, s in zip(STAGES, offsets, strict=True)]
    return {"anchor": "issued_at", "stages": stages}


def invoice_body(
    external_id: str,
    *,
    currency: str,
    amount: str,
    name: str,
    email: str,
    locale: str,
    timezone: str,
    customer_external_id: str,
    issue_date: date | None = None,
    due_date: date | None = None,
    phone: str | None = None,
) -> dict:
    """A POST /v1/invoices body, numbered as its external id: issued today and due in 14 days unless
    the dates are given; the customer's phone only if given."""
    issued = issue_date or date.today()
    customer = {
        "external_id": customer_external_id,
        "name": name,
        "email": email,
        "locale": locale,
        "timezone": timezone,
    }
    if phone is not None:
        customer["phone"] = phone
    return {
        "external_id": external_id,
        "number": external_id,
        "currency": currency,
        "amount_due": amount,
        "issue_date": issued.isoformat(),
        "due_date": (due_date or issued + timedelta(days=14)).isoformat(),
        "payment_url": f"https://pay.example.com/{external_id}",
        "customer": customer,
    }


def stripe_invoice_paid(
    event_id: str, stripe_invoice_id: str, *, number: str, amount_paid: int, currency: str, invoice_id: str
) -> bytes:
    """The body of a Stripe invoice.paid event for our invoice `invoice_id` (named in its metadata)."""
    now = int(time.time())
    event = {
        "id": event_id,
        "object": "event",
        "type": "invoice.paid",
        "created": now,
        "data": {
            "object": {
                "id": stripe_invoice_id,
                "object": "invoice",
                "number": number,
                "amount_paid": amount_paid,
                "currency": currency,
                "metadata": {"dunning_invoice_id": invoice_id},
                "status_transitions": {"paid_at": now},
            }
        },
    }
    return json.dumps(event).encode()


def post_stripe_webhook(
    client: httpx.Client, reconciliation_url: str, tenant_id: str, payload: bytes, secret: str
) -> httpx.Response:
    """Deliver a Stripe event to the tenant's webhook, signed with `secret` as Stripe signs it."""
    return client.post(
        f"{reconciliation_url}/v1/webhooks/stripe/{tenant_id}",
        content=payload,
        headers={"Stripe-Signature": sign(payload, secret), "Content-Type": "application/json"},
    )
