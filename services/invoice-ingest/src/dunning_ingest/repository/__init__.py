"""SQL of invoice-ingest, by aggregate: invoices (with their customers), their changes (updates,
voids, write-offs, history), payments and credit notes, the dunning timeline, Idempotency-Keys.
Every query is scoped by tenant; set-based where it counts. Callers use
`repository.<function>`: the names below are the whole interface."""

from dunning_ingest.repository.changes import (
    changes_of,
    close_invoice,
    credit_notes_of,
    customer_by_external_id,
    insert_changes,
    lock_invoice,
    lock_invoices,
    update_invoices,
)
from dunning_ingest.repository.idempotency_keys import (
    claim_idempotency_key,
    complete_idempotency_key,
    idempotency_key,
    purge_idempotency_keys,
    release_idempotency_key,
)
from dunning_ingest.repository.invoices import (
    INVOICE_SELECT,
    CustomerRow,
    add_to_outbox,
    create_one,
    existing_by_external_id,
    get_invoice,
    insert_invoices,
    invoice_ref,
    invoice_refs,
    list_invoices,
    payments_of,
    timeline_of,
    upsert_customers,
)
from dunning_ingest.repository.payments import (
    apply_balance,
    record_credit_note,
    record_payment,
)
from dunning_ingest.repository.timeline import (
    StageObservation,
    append_history_many,
    observe_stages,
    observe_stages_many,
)

__all__ = [
    "changes_of",
    "close_invoice",
    "credit_notes_of",
    "customer_by_external_id",
    "insert_changes",
    "lock_invoice",
    "lock_invoices",
    "update_invoices",
    "record_credit_note",
    "CustomerRow",
    "INVOICE_SELECT",
    "StageObservation",
    "add_to_outbox",
    "append_history_many",
    "apply_balance",
    "claim_idempotency_key",
    "complete_idempotency_key",
    "create_one",
    "existing_by_external_id",
    "get_invoice",
    "idempotency_key",
    "insert_invoices",
    "invoice_ref",
    "invoice_refs",
    "list_invoices",
    "observe_stages",
    "observe_stages_many",
    "payments_of",
    "purge_idempotency_keys",
    "record_payment",
    "release_idempotency_key",
    "timeline_of",
    "upsert_customers",
]
