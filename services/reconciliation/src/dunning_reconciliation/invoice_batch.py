"""InvoiceIssued for a run of events in a few statements (the consumer runner's batch handler).

Same end state as `handlers.on_invoice_issued` applied event by event, in three round trips instead
of three per invoice:
1. every invoice's key locks (the names `reconcile.lock_invoice_keys` takes), in one statement and
   in the same sorted order every other taker uses, so a concurrent webhook or API payment and the
   batch cannot miss each other, nor deadlock;
2. one INSERT for all invoices (an invoice already known, or named twice in the batch, is skipped);
3. one query for the unmatched payments naming any of the new invoices, one for the customers among
   them holding credit; only those invoices (rare) take the per-invoice late-matching and
   credit-applying paths, in event order.
Anything the per-event handler would reject makes this raise: the runner then rolls the batch back
and applies it event by event, so the bad event is dead-lettered alone.
"""

import asyncpg

from dunning.contracts import InvoiceIssued
from dunning.events import Event
from dunning.handler_table import Rejected
from dunning.logging import get_logger
from dunning_reconciliation import reconcile, repository
from dunning_reconciliation.credits import apply_customer_credit
from dunning_reconciliation.domain import invoice_keys, invoice_status

log = get_logger(__name__)


def issued(event: Event[InvoiceIssued]) -> InvoiceIssued:
    """The event's invoice; Rejected if it names another tenant than the envelope (both handlers)."""
    invoice = event.data
    if invoice.tenant_id != event.tenant_id:
        raise Rejected(f"data.tenant_id {invoice.tenant_id!r} differs from the envelope's tenantid")
    return invoice


def _row(n: int, event: Event[InvoiceIssued]) -> dict:
    """The invoice row as `on_invoice_issued` stores it; raises on what it would reject."""
    invoice = issued(event)
    return {
        "n": n,
        "invoice_id": invoice.invoice_id,
        "tenant_id": event.tenant_id,
        "external_id": invoice.external_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "amount_due": str(invoice.amount_due),
        "metadata": invoice.metadata,
        "status": invoice_status(invoice.amount_due),
        "issued_at": invoice.issued_at.isoformat(),
        "customer_id": invoice.customer.customer_id,
        "customer_name": invoice.customer.name,
        "due_date": invoice.due_date.isoformat(),
    }


async def on_invoices_issued(conn: asyncpg.Connection, events: list[Event[InvoiceIssued]]) -> None:
    """Mirrors handlers.on_invoice_issued for a run of events (see the module's docstring)."""
    rows: list[dict] = []
    seen: set[str] = set()
    lock_names: set[str] = set()
    for n, event in enumerate(events):
        row = _row(n, event)
        lock_names.update(
            invoice_keys(row["invoice_id"], row["external_id"], row["number"]).lock_names(row["tenant_id"])
        )
        if row["invoice_id"] not in seen:  # a repeat in the batch is "already known", as one by one
            seen.add(row["invoice_id"])
            rows.append(row)
    await repository.lock_names(conn, lock_names)  # one statement, in the order every taker uses
    stored = await repository.insert_invoices(conn, rows)
    new = [r for r in rows if r["invoice_id"] in stored]
    with_pending: set[str] = set()
    if new:
        keys = [{k: r[k] for k in ("tenant_id", "invoice_id", "external_id", "number")} for r in new]
        with_pending = await repository.invoices_with_pending_payments(conn, keys)
    with_credit: set[tuple[str, str]] = set()
    if new:
        customers = [{"tenant_id": r["tenant_id"], "customer_id": r["customer_id"]} for r in new]
        with_credit = await repository.customers_with_credit(conn, customers)
    late = credited = 0
    for r in new:
        if r["invoice_id"] in with_pending:
            late += await reconcile.apply_pending(conn, r["tenant_id"], r["invoice_id"], r["external_id"], r["number"])
        if (r["tenant_id"], r["customer_id"]) in with_credit:
            credited += await apply_customer_credit(conn, r["tenant_id"], r["customer_id"], invoice_id=r["invoice_id"])
    log.info(
        "reconciliation.invoices.stored",
        events=len(events),
        stored=len(new),
        already_known=len(events) - len(new),
        late_payments=late,
        credit_applied=credited,
    )
