"""Changing an invoice after its creation, the rules written once.

An update (PATCH /v1/invoices/{id}, or a bulk upsert's changed item) is a new `State` of an open
invoice: `field_changes` says which fields differ (old -> new), and `apply_updates` writes the new
version, its history row and its InvoiceUpdated, in the caller's transaction, for one invoice or a
nightly sync's hundreds. A void or write-off (`close`) likewise: the new status and version, the
history row, InvoiceVoided or InvoiceWrittenOff. Only open invoices change; currency and
issue_date never do. Optimistic concurrency: `dunning.http.preconditions.check_if_match` compares
If-Match with the version.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from dunning import outbox
from dunning.clock import isoformat
from dunning.contracts import Customer
from dunning.events import envelope
from dunning.http import PROBLEMS, Problem
from dunning.money import MoneyError, format_amount, parse_amount
from dunning_ingest import repository
from dunning_ingest.invoice_input import FastCustomerIn, FastInvoiceIn, InvoicePatch
from dunning_ingest.messages import current_traceparent, invoice_updated, invoice_voided, invoice_written_off

UPDATABLE = ("number", "customer", "amount_due", "due_date", "payment_url", "metadata")  # InvoiceUpdated.changed
IMMUTABLE = ("currency", "issue_date")


class State(NamedTuple):
    """What an update may change: an invoice's updatable fields."""

    number: str
    customer: Customer
    amount_due: Decimal
    due_date: date
    payment_url: str | None
    metadata: dict[str, str]


class Update(NamedTuple):
    row: Any  # the invoice as it is (repository.INVOICE_SELECT), locked
    new: State
    changes: list[dict[str, Any]]  # field_changes(row, new), not empty
    content_hash: bytes  # of the new content (InvoiceIn.content_hash)


def customer_of(row: Any, prefix: str = "customer_", id_column: str = "customer_id") -> Customer:
    """The customer of an invoice row (repository.INVOICE_SELECT), or of a customers row (prefix "",
    id_column "id"), with its optional fields as the events carry them (none: None)."""
    tags, attributes = row[f"{prefix}tags"], row[f"{prefix}attributes"]
    return Customer(
        row[id_column],
        row[f"{prefix}external_id"],
        row[f"{prefix}name"],
        row[f"{prefix}email"],
        row[f"{prefix}locale"],
        row[f"{prefix}timezone"],
        row[f"{prefix}country"],
        row[f"{prefix}subdivision"],
        tuple(tags) if tags else None,
        dict(attributes) if attributes else None,
        row.get(f"{prefix}phone"),
        dict(row.get(f"{prefix}postal_address") or {}) or None,
    )


def stored_state(row: Any) -> State:
    return State(
        row["number"], customer_of(row), row["amount_due"], row["due_date"], row["payment_url"], row["metadata"]
    )


def _json(field: str, value: Any, currency: str) -> Any:
    """A field's value as the history and the API show it."""
    if field == "customer":
        return value.external_id
    if field == "amount_due":
        return format_amount(value, currency)
    if field == "due_date":
        return value.isoformat()
    return value


def field_changes(row: Any, new: State) -> list[dict[str, Any]]:
    """[{field, previous, value}] of the fields `new` changes (a customer by its external id, unique
    per tenant, so an upsert can compare before it knows the customer's id)."""
    old, currency, out = stored_state(row), row["currency"], []
    for field in UPDATABLE:
        before, after = getattr(old, field), getattr(new, field)
        same = before.external_id == after.external_id if field == "customer" else before == after
        if not same:
            out.append(
                {"field": field, "previous": _json(field, before, currency), "value": _json(field, after, currency)}
            )
    return out


def content_hash(row: Any, new: State) -> bytes:
    """InvoiceIn.content_hash of the invoice with its new state (a POST of it then reads as a replay)."""
    c, currency = new.customer, row["currency"]
    customer = FastCustomerIn(c.external_id, c.name, c.email, c.locale, c.timezone)
    amount = format_amount(new.amount_due, currency)
    return FastInvoiceIn(
        row["external_id"],
        new.number,
        customer,
        currency,
        Decimal(amount),
        row["issue_date"],
        new.due_date,
        new.payment_url,
        new.metadata,
        amount,
    ).content_hash()


# --- the rules ---------------------------------------------------------------------------------


def closed_message(row: Any) -> str:
    return f"invoice {row['id']} is {row['status']}: only open invoices can be changed"


def closed_problem(row: Any) -> Problem:
    message = closed_message(row)
    return Problem(
        409,
        message,
        type_=PROBLEMS + "invoice-closed",
        title="Invoice closed",
        errors=[{"field": "status", "message": message, "code": "invoice_closed"}],
        extensions={"invoice_id": row["id"], "invoice_status": row["status"]},
    )


def immutable_message(field: str, row: Any) -> str:
    value = row[field]
    shown = value.isoformat() if isinstance(value, date) else value
    return f"the {field} of an invoice never changes (it is {shown}); void it and issue a new invoice instead"


def changed_immutable(row: Any, currency: str | None, issue_date: date | None) -> str | None:
    """The first of currency and issue_date given with another value than the invoice's, if any."""
    for field, value in (("currency", currency), ("issue_date", issue_date)):
        if value is not None and value != row[field]:
            return field
    return None


def patched(row: Any, patch: InvoicePatch, customer: Customer | None) -> State:
    """The invoice's state with `patch` applied (a JSON merge patch; `customer`: the one that
    `customer_external_id` names, already looked up). A 422 naming the field if it cannot apply."""
    given = patch.model_fields_set
    if (field := changed_immutable(row, patch.currency, patch.issue_date)) is not None:
        raise Problem.invalid(field, immutable_message(field, row), "immutable")
    state = stored_state(row)
    amount = state.amount_due
    if "amount_due" in given:
        try:
            amount = parse_amount(patch.amount_due, row["currency"])
        except MoneyError as exc:
            raise Problem.invalid("amount_due", str(exc), "amount") from None
    due = patch.due_date if "due_date" in given else state.due_date
    if due < row["issue_date"]:
        raise Problem.invalid("due_date", f"must be on or after issue_date ({row['issue_date']})", "due_before_issue")
    return State(
        patch.number if "number" in given else state.number,
        customer or state.customer,
        amount,
        due,
        patch.payment_url if "payment_url" in given else state.payment_url,
        (patch.metadata or {}) if "metadata" in given else state.metadata,
    )


# --- writing them ------------------------------------------------------------------------------


def _change_row(invoice_id: str, version: int, kind: str, at: datetime, event_id: str, **fields: Any) -> dict:
    return {
        "invoice_id": invoice_id,
        "version": version,
        "kind": kind,
        "at": at,
        "changes": None,
        "reason": None,
        "amount": None,
        "event_id": event_id,
        **fields,
    }


async def apply_updates(conn: asyncpg.Connection, tenant_id: str, updates: list[Update], now: datetime) -> None:
    """Write each update (new version, history row, InvoiceUpdated in the outbox); rows locked by the caller."""
    if not updates:
        return
    rows = [
        {
            "id": u.row["id"],
            "version": u.row["version"] + 1,
            "number": u.new.number,
            "customer_id": u.new.customer.customer_id,
            "amount_due": str(u.new.amount_due),
            "due_date": u.new.due_date,
            "payment_url": u.new.payment_url,
            "metadata": u.new.metadata,
            "content_hash": u.content_hash.hex(),
        }
        for u in updates
    ]
    written = await repository.update_invoices(conn, tenant_id, now, rows)
    if written != len(rows):  # the rows are locked and were read in this transaction
        raise RuntimeError(f"{len(rows) - written} invoice update(s) found another version than the one read")
    time, traceparent = isoformat(now), current_traceparent()
    envelopes, history = [], []
    for u, r in zip(updates, rows, strict=True):
        changed = tuple(c["field"] for c in u.changes)
        env = envelope(
            invoice_updated(tenant_id, u.row, u.new, changed, r["version"], now), time=time, traceparent=traceparent
        )
        envelopes.append(env)
        history.append(_change_row(r["id"], r["version"], "updated", now, env["id"], changes=u.changes))
    await repository.insert_changes(conn, tenant_id, history)
    await outbox.add_many(conn, envelopes)


async def close(conn: asyncpg.Connection, tenant_id: str, row: Any, status: str, reason: str, now: datetime) -> None:
    """Void (`status` "void") or write off ("written_off") the open invoice `row`, locked by the caller."""
    closed = await repository.close_invoice(conn, tenant_id, row["id"], status, now, reason)
    if closed is None:
        raise RuntimeError(f"invoice {row['id']} was not open")
    version, amount = closed["version"], closed["written_off_amount"]
    if status == "void":
        record: Any = invoice_voided(tenant_id, row, version, reason, now)
    else:
        record = invoice_written_off(tenant_id, row, version, reason, amount, now)
    env = envelope(record, time=isoformat(now))
    kind = "voided" if status == "void" else "written_off"
    await repository.insert_changes(
        conn, tenant_id, [_change_row(row["id"], version, kind, now, env["id"], reason=reason, amount=amount)]
    )
    await outbox.add_many(conn, [env])
