"""SQL of the scheduler, by aggregate: invoices and their timers (planning, payments, reads), firing
(the payments gate, watermark statements), policies. Every function runs on the caller's connection
and transaction; callers use `repository.<function>`: the names below are the whole interface."""

from dunning_scheduler.repository.firing import (
    PAYMENTS_TOPIC,
    fire_due,
    firing_gauges,
    gate_state,
    next_due_at,
    prune_watermarks,
    store_watermarks,
    wake_firing,
)
from dunning_scheduler.repository.invoices import (
    PLAN_INVOICE_FIELDS,
    PLAN_TIMER_FIELDS,
    TIMER_COLUMNS,
    apply_payment,
    insert_timers,
    invoice_of,
    invoice_owner,
    plan_invoice_row,
    plan_invoices,
    timers_of,
)
from dunning_scheduler.repository.policies import (
    insert_policy,
    latest_policy,
    lock_tenant_policy,
)

__all__ = [
    "PAYMENTS_TOPIC",
    "PLAN_INVOICE_FIELDS",
    "PLAN_TIMER_FIELDS",
    "TIMER_COLUMNS",
    "apply_payment",
    "fire_due",
    "firing_gauges",
    "gate_state",
    "insert_policy",
    "insert_timers",
    "invoice_of",
    "invoice_owner",
    "latest_policy",
    "lock_tenant_policy",
    "next_due_at",
    "plan_invoice_row",
    "plan_invoices",
    "prune_watermarks",
    "store_watermarks",
    "timers_of",
    "wake_firing",
]
