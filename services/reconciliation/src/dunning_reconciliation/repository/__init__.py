"""SQL of reconciliation (schema `reconciliation`), by aggregate: the watermark's fence and locks,
invoices (with their changes: updates, voids, write-offs), payments (with Stripe's events and
secrets), credit notes. Every write takes the caller's connection, so it joins the caller's
transaction; callers use `repository.<function>`: the names below are the whole interface."""

from dunning_reconciliation.repository.base import Conn
from dunning_reconciliation.repository.fence import (
    ACK_FENCE,
    WATERMARK_PUBLISHER,
    acknowledge_time,
    clock,
    fence_holders,
    lock_names,
    resign_watermark,
    try_lead_watermark,
    watermark_snapshot,
)
from dunning_reconciliation.repository.invoices import (
    find_invoice,
    insert_invoice,
    insert_invoices,
    invoice_external_id,
    invoices_with_pending_payments,
    lock_invoice,
    set_invoice_balance,
)
from dunning_reconciliation.repository.payments import (
    PAYMENT_COLUMNS,
    active_webhook_secrets,
    add_webhook_secret,
    claim_stripe_event,
    finish_stripe_event,
    get_payment,
    list_payments,
    payment_by_reference,
    save_payment,
    store_response,
    stripe_object_payment,
    unmatched_for_invoice,
)

__all__ = [
    "ACK_FENCE",
    "PAYMENT_COLUMNS",
    "WATERMARK_PUBLISHER",
    "Conn",
    "acknowledge_time",
    "active_webhook_secrets",
    "add_webhook_secret",
    "claim_stripe_event",
    "clock",
    "fence_holders",
    "find_invoice",
    "finish_stripe_event",
    "get_payment",
    "insert_invoice",
    "insert_invoices",
    "invoice_external_id",
    "invoices_with_pending_payments",
    "list_payments",
    "lock_invoice",
    "lock_names",
    "payment_by_reference",
    "resign_watermark",
    "save_payment",
    "set_invoice_balance",
    "store_response",
    "stripe_object_payment",
    "try_lead_watermark",
    "unmatched_for_invoice",
    "watermark_snapshot",
]
