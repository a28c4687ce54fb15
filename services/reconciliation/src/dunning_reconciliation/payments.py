"""Payments reported by the accounting system (`POST /v1/payments`).

Idempotent on (tenant, reference): the request's content is digested; the same reference with the
same content answers the first result again (200), with different content 409. An advisory lock on
the reference serialises concurrent retries, so exactly one of them records the payment.
"""

import hashlib
from typing import Any

import asyncpg
import orjson

from dunning.clock import as_utc, isoformat, utcnow
from dunning.http import Problem
from dunning.money import MoneyError, format_amount, parse_amount
from dunning_reconciliation import reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import IncomingPayment, MatchKeys
from dunning_reconciliation.schemas import PaymentIn, payment_view

SOURCE = "api"


def _invalid(field: str, message: str, status: int = 422) -> Problem:
    return Problem(status, f"{field}: {message}", errors=[{"field": field, "message": message}])


def incoming_payment(tenant_id: str, body: PaymentIn) -> IncomingPayment:
    """Validate what the model cannot check alone; raises 422 problems naming the field."""
    try:
        amount = parse_amount(body.amount, body.currency)
    except MoneyError as exc:
        raise _invalid("amount", str(exc)) from None
    if not body.invoice_id and not body.invoice_external_id:
        raise _invalid("invoice_id", "name the invoice with invoice_id or invoice_external_id")
    received_at = as_utc(body.received_at)
    if (received_at - utcnow()).total_seconds() > 86400:
        raise _invalid("received_at", "is more than a day in the future")
    content = {
        "invoice_id": body.invoice_id,
        "invoice_external_id": body.invoice_external_id,
        "amount": format_amount(amount, body.currency),
        "currency": body.currency,
        "received_at": isoformat(received_at),
    }
    fingerprint = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return IncomingPayment(
        tenant_id=tenant_id,
        source=SOURCE,
        source_reference=body.reference,
        currency=body.currency,
        amount=amount,
        received_at=received_at,
        keys=MatchKeys.of(body.invoice_id, (body.invoice_external_id,) if body.invoice_external_id else ()),
        fingerprint=fingerprint,
    )


async def record_payment(pool: asyncpg.Pool, tenant_id: str, body: PaymentIn) -> tuple[int, dict[str, Any]]:
    """Returns (201, payment) for a new payment, (200, first answer) for an identical retry."""
    payment = incoming_payment(tenant_id, body)
    async with pool.acquire() as conn, conn.transaction():
        payment = await reconcile.acknowledging(conn, payment)  # first: the watermark's fence
        await repo.lock_names(conn, [f"reconciliation-api-ref\x1f{tenant_id}\x1f{body.reference}"])
        earlier = await repo.payment_by_reference(conn, tenant_id, SOURCE, body.reference)
        if earlier is not None:
            if earlier["fingerprint"] != payment.fingerprint:
                raise _invalid(
                    "reference",
                    f"payment {body.reference!r} was already reported with different "
                    "content; a correction needs a new reference",
                    status=409,
                )
            return 200, earlier["response"]
        if body.invoice_id and body.invoice_external_id:
            external_id = await repo.invoice_external_id(conn, tenant_id, body.invoice_id)
            if external_id is not None and external_id != body.invoice_external_id:
                raise _invalid("invoice_external_id", f"invoice {body.invoice_id} has external id {external_id!r}")
        try:
            outcome = await reconcile.receive(conn, payment, strict_currency=True)
        except reconcile.CurrencyMismatch as exc:
            raise _invalid("currency", f"invoice {exc.invoice_id} is in {exc.invoice_currency}") from None
        pid = outcome.payment_id
        allocations, credits = await repo.allocations_of(conn, [pid]), await repo.credits_of_payments(conn, [pid])
        view = payment_view(await repo.get_payment(conn, tenant_id, pid), allocations[pid], credits.get(pid))
        await repo.store_response(conn, outcome.payment_id, view)
    return 201, view
