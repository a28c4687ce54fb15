"""Credit notes from the accounting system (`POST /v1/credit-notes`): applied to an invoice's balance
as a payment is, and published as CreditNoteIssued on the payments topic.

The transaction that applies a credit note joins the payments watermark's acknowledgement fence
first (`repository.acknowledge_time`, as `payments.record_payment` does) and writes
CreditNoteIssued to the outbox, so a statement whose watermark is at or after its `acknowledged_at`
has it below its payments offsets: a settling credit note cancels the reminders scheduled after it
exactly as a payment does (docs/cancel-guarantee.md). Idempotent on (tenant, reference) like API
payments: the same request again answers the first result (200), different content 409. Only an
open invoice with something owed takes a credit note; more than the balance applies the balance and
records the rest as `unapplied_amount`.
"""

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dunning import outbox
from dunning.http import Problem
from dunning.ids import new_id
from dunning.logging import get_logger
from dunning.money import MoneyError, format_amount, parse_amount, quantize
from dunning_reconciliation import messages
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import CLOSED, MatchKeys, apply_to_balance, invoice_status
from dunning_reconciliation.schemas import CreditNoteIn, credit_note_view

log = get_logger(__name__)


@dataclass(frozen=True)
class CreditNoteRequest:
    """A credit note request with its amount parsed and its content digested (for idempotency)."""

    tenant_id: str
    body: CreditNoteIn
    amount: Decimal
    fingerprint: str


def credit_note_request(tenant_id: str, body: CreditNoteIn) -> CreditNoteRequest:
    """Validate what the model cannot check alone; raises 422 problems naming the field."""
    try:
        amount = parse_amount(body.amount, body.currency)
    except MoneyError as exc:
        raise Problem.invalid("amount", str(exc), "invalid_amount") from None
    if not body.invoice_id and not body.invoice_external_id:
        raise Problem.invalid("invoice_id", "name the invoice with invoice_id or invoice_external_id", "missing")
    content = {
        "invoice_id": body.invoice_id,
        "invoice_external_id": body.invoice_external_id,
        "amount": format_amount(amount, body.currency),
        "currency": body.currency,
        "reason": body.reason,
    }
    fingerprint = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return CreditNoteRequest(tenant_id, body, amount, fingerprint)


async def record_credit_note(pool: asyncpg.Pool, tenant_id: str, body: CreditNoteIn) -> tuple[int, dict[str, Any]]:
    """Returns (201, credit note) for a new one, (200, first answer) for an identical retry."""
    request = credit_note_request(tenant_id, body)
    async with pool.acquire() as conn, conn.transaction():
        return await issue(conn, request)


async def issue(conn: asyncpg.Connection, request: CreditNoteRequest) -> tuple[int, dict[str, Any]]:
    """Apply the credit note in the caller's transaction (which must commit before the 2xx: that is
    the acknowledgement). Raises a Problem, having changed nothing, when it cannot be applied."""
    acknowledged_at = await repo.acknowledge_time(conn)  # first: the watermark's fence
    tenant_id, body = request.tenant_id, request.body
    await repo.lock_names(conn, [f"reconciliation-credit-note\x1f{tenant_id}\x1f{body.reference}"])
    earlier = await repo.credit_note_by_reference(conn, tenant_id, body.reference)
    if earlier is not None:
        if earlier["fingerprint"] != request.fingerprint:
            raise Problem.invalid(
                "reference",
                f"credit note {body.reference!r} was already issued with different content; "
                "a correction needs a new reference",
                "reference_conflict",
                status=409,
            )
        return 200, earlier["response"]
    invoice = await _open_invoice(conn, request)
    currency = invoice["currency"]
    money = apply_to_balance(quantize(invoice["balance"], currency), request.amount)
    version = await repo.set_invoice_balance(
        conn, invoice["invoice_id"], money.remaining, invoice_status(money.remaining)
    )
    row = await repo.insert_credit_note(
        conn,
        credit_note_id=new_id("cn"),
        tenant_id=tenant_id,
        invoice_id=invoice["invoice_id"],
        invoice_external_id=invoice["external_id"],
        reference=body.reference,
        reason=body.reason,
        currency=currency,
        amount=request.amount,
        amount_applied=money.applied,
        unapplied_amount=money.unapplied,
        balance_remaining=money.remaining,
        settled=money.settled,
        fingerprint=request.fingerprint,
        acknowledged_at=acknowledged_at,
    )
    await outbox.add(conn, messages.credit_note_issued(row, version))
    view = credit_note_view(row)
    await repo.store_credit_note_response(conn, row["credit_note_id"], view)
    fields = {k: view[k] for k in ("credit_note_id", "invoice_id", "reference", "amount", "amount_applied")}
    if money.unapplied > 0:
        log.warning("reconciliation.credit_note.above_balance", unapplied_amount=view["unapplied_amount"], **fields)
    log.info("reconciliation.credit_note.applied", settled=money.settled, **fields)
    return 201, view


async def _open_invoice(conn: asyncpg.Connection, request: CreditNoteRequest) -> asyncpg.Record:
    """The invoice the request names, locked; 404 if unknown, 422 if the keys or the currency
    disagree, 409 if it is void, written off or already settled."""
    body, tenant_id = request.body, request.tenant_id
    field, value = (
        ("invoice_id", body.invoice_id) if body.invoice_id else ("invoice_external_id", body.invoice_external_id)
    )
    keys = MatchKeys.of(body.invoice_id) if body.invoice_id else MatchKeys.of(None, (body.invoice_external_id,))
    invoice_id = await repo.find_invoice(conn, tenant_id, keys)
    invoice = None if invoice_id is None else await repo.lock_invoice(conn, tenant_id, invoice_id)
    if invoice is None:
        raise Problem.not_found(field, f"No invoice {value!r} for this tenant.")
    if body.invoice_id and body.invoice_external_id and invoice["external_id"] != body.invoice_external_id:
        raise Problem.invalid(
            "invoice_external_id", f"invoice {invoice_id} has external id {invoice['external_id']!r}", "mismatch"
        )
    if invoice["currency"] != body.currency:
        raise Problem.invalid("currency", f"invoice {invoice_id} is in {invoice['currency']}", "currency_mismatch")
    status = invoice["status"]
    if status in CLOSED or invoice["balance"] <= 0:
        why = {"void": "is void", "written_off": "is written off"}.get(status, "is already settled")
        raise Problem(
            409,
            f"invoice {invoice_id} {why}: a credit note applies only to an open balance",
            errors=[
                {
                    "field": field,
                    "message": why,
                    "code": "invoice_closed" if status in CLOSED else "invoice_settled",
                }
            ],
            extensions={"invoice_status": status},
        )
    return invoice
