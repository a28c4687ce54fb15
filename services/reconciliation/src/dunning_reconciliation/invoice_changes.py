"""The changes invoice-ingest makes to an invoice, applied to reconciliation's copy of it
(handlers of InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff; in the consumer runner's transaction).

Each event carries the invoice's version after the change; one not newer than the version held is
ignored, so replays and redeliveries change nothing. An event for an invoice not known here (its
InvoiceIssued comes first on the same partition, so only after a dead letter) is logged and skipped.
- **Update**: an amount correction moves the balance by the difference (what was applied stays
  applied; at or below zero the invoice is paid, and paid again open if the amount grows). A new
  external id or number changes the matching keys, and payments waiting for the new keys are
  applied. A void or written-off invoice keeps its zero balance.
- **Void**: status `void`, nothing owed, when and why kept.
- **Write-off**: status `written_off`, nothing owed, and the balance reconciliation held at that
  moment recorded for the write-off report (beside the amount invoice-ingest reported).
Payments that arrive afterwards for a closed invoice are recorded, never applied (reconcile.py).
"""

from decimal import Decimal
from typing import Any, Protocol, TypeVar

import asyncpg

from dunning.contracts import InvoiceUpdated, InvoiceVoided, InvoiceWrittenOff
from dunning.events import Event
from dunning.handler_table import Rejected
from dunning.logging import get_logger
from dunning.money import quantize
from dunning_reconciliation import reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import CLOSED, VOID, WRITTEN_OFF, corrected_balance, invoice_status

log = get_logger(__name__)


class _Change(Protocol):
    @property
    def invoice_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def version(self) -> int: ...


C = TypeVar("C", bound=_Change)


def _change(event: Event[C]) -> C:
    """The event's record; Rejected if it names another tenant than the envelope."""
    if event.data.tenant_id != event.tenant_id:
        raise Rejected(f"data.tenant_id {event.data.tenant_id!r} differs from the envelope's tenantid")
    return event.data


async def _newer(conn: asyncpg.Connection, event: Event[Any], change: _Change) -> asyncpg.Record | None:
    """The invoice, locked, if `change` is newer than the version held; else None (logged)."""
    invoice = await repo.lock_invoice(conn, event.tenant_id, change.invoice_id)
    if invoice is None:
        log.warning("reconciliation.invoice.change_unknown", invoice_id=change.invoice_id, event_type=event.name)
        return None
    if change.version <= invoice["version"]:
        log.info(
            "reconciliation.invoice.change_stale",
            invoice_id=change.invoice_id,
            event_type=event.name,
            version=change.version,
            held=invoice["version"],
        )
        return None
    return invoice


async def on_invoice_updated(conn: asyncpg.Connection, event: Event[InvoiceUpdated]) -> None:
    """Apply the new state: amount (the balance moves by the difference), keys, metadata."""
    change = _change(event)
    tenant_id, invoice_id = event.tenant_id, change.invoice_id
    await reconcile.lock_invoice_keys(conn, tenant_id, invoice_id, change.external_id, change.number)
    invoice = await _newer(conn, event, change)
    if invoice is None:
        return
    currency = invoice["currency"]
    balance, status = invoice["balance"], invoice["status"]
    new_amount = quantize(change.amount_due, currency)
    if status not in CLOSED:
        balance = corrected_balance(invoice["balance"], invoice["amount_due"], new_amount)
        status = invoice_status(balance)
    await repo.update_invoice(
        conn,
        invoice_id,
        version=change.version,
        external_id=change.external_id,
        number=change.number,
        amount_due=new_amount,
        balance=balance,
        status=status,
        metadata=dict(change.metadata),
        customer_id=change.customer.customer_id,
        due_date=change.due_date,
    )
    late = 0
    if (change.external_id, change.number) != (invoice["external_id"], invoice["number"]):
        late = await reconcile.apply_pending(conn, tenant_id, invoice_id, change.external_id, change.number)
    log.info(
        "reconciliation.invoice.updated",
        invoice_id=invoice_id,
        version=change.version,
        balance=str(balance),
        status=status,
        late_payments=late,
    )


async def on_invoice_voided(conn: asyncpg.Connection, event: Event[InvoiceVoided]) -> None:
    """Close the invoice: void, nothing owed."""
    change = _change(event)
    invoice = await _newer(conn, event, change)
    if invoice is None:
        return
    await repo.close_invoice(
        conn,
        change.invoice_id,
        version=change.version,
        status=VOID,
        voided_at=change.voided_at,
        void_reason=change.reason,
    )
    log.info(
        "reconciliation.invoice.voided",
        invoice_id=change.invoice_id,
        version=change.version,
        balance=str(invoice["balance"]),
    )


async def on_invoice_written_off(conn: asyncpg.Connection, event: Event[InvoiceWrittenOff]) -> None:
    """Close the invoice as written off, recording the balance held now for the report."""
    change = _change(event)
    invoice = await _newer(conn, event, change)
    if invoice is None:
        return
    currency = invoice["currency"]
    zero = quantize(Decimal(0), currency)
    held = max(quantize(invoice["balance"], currency), zero)  # a balance below zero: nothing was owed
    amount = held if invoice["status"] not in CLOSED else zero
    await repo.close_invoice(conn, change.invoice_id, version=change.version, status=WRITTEN_OFF)
    await repo.insert_write_off(
        conn,
        invoice_id=change.invoice_id,
        tenant_id=event.tenant_id,
        external_id=invoice["external_id"],
        number=invoice["number"],
        currency=currency,
        amount=amount,
        amount_reported=quantize(change.amount_written_off, currency),
        reason=change.reason,
        written_off_at=change.written_off_at,
    )
    fields = dict(invoice_id=change.invoice_id, version=change.version, amount=str(amount))
    if amount != change.amount_written_off:
        log.warning("reconciliation.invoice.write_off_differs", reported=str(change.amount_written_off), **fields)
    log.info("reconciliation.invoice.written_off", **fields)
