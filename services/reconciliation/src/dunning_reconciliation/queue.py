"""The unmatched queue and manual allocations: list payments (the queue is `status=unmatched`, with
suggestions), allocate a payment's unallocated money by hand to one or several invoices, undo one
allocation. A manual allocation can teach the payer's account (payer_accounts), so the same payer's
later payments of an exact open amount match alone (matching rule `payer_account_amount`).

Each change runs in one transaction that joins the payments watermark's fence first; a request
refused (4xx naming the field) changes nothing.
"""

import hashlib
from dataclasses import replace
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from dunning.http import Problem
from dunning.logging import get_logger
from dunning.money import MoneyError, format_amount, parse_amount
from dunning_reconciliation import allocations, reconcile
from dunning_reconciliation import repository as repo
from dunning_reconciliation.domain import PARTIALLY_ALLOCATED, UNMATCHED, Allocation
from dunning_reconciliation.queue_schemas import AllocateIn, queued_payment_view
from dunning_reconciliation.repository import matching as match_repo
from dunning_reconciliation.repository import queue as queue_repo

log = get_logger(__name__)
ALLOCATABLE = (UNMATCHED, PARTIALLY_ALLOCATED)


def invalid(field: str, message: str, status: int = 422) -> Problem:
    return Problem(status, f"{field}: {message}", errors=[{"field": field, "message": message}])


async def payment_views(conn: repo.Conn, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """The payments as the API shows them: each with its allocations; a queued one with suggestions."""
    ids = [r["payment_id"] for r in rows]
    allocated, credits = await repo.allocations_of(conn, ids), await repo.credits_of_payments(conn, ids)
    return [queued_payment_view(row, allocated[row["payment_id"]], credits.get(row["payment_id"])) for row in rows]


async def list_payments(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    invoice_id: str | None,
    status: str | None,
    customer_id: str | None,
    source: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` payments after the cursor's, oldest id first, as views."""
    stored_status = UNMATCHED if status == "pending_match" else status
    rows = await queue_repo.list_payments(
        pool,
        tenant_id,
        invoice_id=invoice_id,
        status=stored_status,
        customer_id=customer_id,
        source=source,
        after=after,
        limit=limit,
    )
    return await payment_views(pool, rows)


def _fingerprint(payment_id: str, body: AllocateIn) -> str:
    content = {"payment_id": payment_id, **body.model_dump(mode="json")}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _checked(conn: asyncpg.Connection, tenant_id: str, row: asyncpg.Record, body: AllocateIn) -> list[tuple]:
    """The body's allocations as (field prefix, invoice row, amount), or a 422 naming the field."""
    currency = row["currency"]
    ids = [a.invoice_id for a in body.allocations if a.invoice_id]
    external_ids = [a.invoice_external_id for a in body.allocations if a.invoice_external_id]
    invoices = await queue_repo.invoices_named(conn, tenant_id, ids, external_ids)
    by_id = {i["invoice_id"]: i for i in invoices}
    by_external: dict[str, list[asyncpg.Record]] = {}
    for invoice in invoices:
        by_external.setdefault(invoice["external_id"], []).append(invoice)
    checked, seen, total = [], set(), Decimal(0)
    for n, a in enumerate(body.allocations):
        at = f"allocations[{n}]"
        key_field, key = (
            ("invoice_id", a.invoice_id) if a.invoice_id else ("invoice_external_id", a.invoice_external_id)
        )
        found = [by_id[key]] if key in by_id and key_field == "invoice_id" else by_external.get(key or "", [])
        if len(found) != 1:
            why = "names two invoices" if found else "no such invoice"
            raise invalid(f"{at}.{key_field}", f"{why}: {key!r}")
        invoice = found[0]
        if invoice["invoice_id"] in seen:
            raise invalid(f"{at}.{key_field}", f"invoice {key!r} is named twice")
        seen.add(invoice["invoice_id"])
        if invoice["currency"] != currency:
            raise invalid(
                f"{at}.{key_field}", f"invoice {key!r} is in {invoice['currency']}, the payment in {currency}"
            )
        if invoice["status"] != "open":
            raise invalid(f"{at}.{key_field}", f"invoice {key!r} is {invoice['status']}: it takes no money")
        try:
            amount = parse_amount(a.amount, currency)
        except MoneyError as exc:
            raise invalid(f"{at}.amount", str(exc)) from None
        if amount > invoice["balance"]:
            balance = format_amount(invoice["balance"], currency)
            raise invalid(f"{at}.amount", f"more than invoice {key!r}'s open balance ({balance} {currency})")
        total += amount
        if total > row["unallocated_amount"]:
            left = format_amount(row["unallocated_amount"], currency)
            raise invalid(f"{at}.amount", f"the allocations add up to more than the payment's unallocated {left}")
        checked.append((at, invoice, amount))
    return checked


async def allocate_by_hand(
    pool: asyncpg.Pool, tenant_id: str, payment_id: str, body: AllocateIn, *, idempotency_key: str | None = None
) -> tuple[int, dict[str, Any], bool]:
    """(status, the payment's view, replayed): 201 once allocated; under an Idempotency-Key the first
    answer again (replayed) for the same request, 422 for a different one."""
    fingerprint = _fingerprint(payment_id, body)
    async with pool.acquire() as conn, conn.transaction():
        acknowledged_at = await repo.acknowledge_time(conn)  # first: the watermark's fence
        if idempotency_key is not None:
            await repo.lock_names(conn, [f"reconciliation-allocation-key\x1f{tenant_id}\x1f{idempotency_key}"])
            earlier = await queue_repo.allocation_request(conn, tenant_id, idempotency_key)
            if earlier is not None:
                if earlier["fingerprint"] != fingerprint:
                    raise invalid("Idempotency-Key", "was used before with a different request")
                return earlier["status"], earlier["response"], True
        row = await repo.lock_payment(conn, tenant_id, payment_id=payment_id)
        if row is None:
            raise invalid("payment_id", f"no payment {payment_id!r}", status=404)
        if row["status"] not in ALLOCATABLE or row["unallocated_amount"] <= 0:
            raise invalid("payment_id", f"payment {payment_id} has nothing left to allocate ({row['status']})", 409)
        checked = await _checked(conn, tenant_id, row, body)
        payment = replace(reconcile.payment_from_row(row), acknowledged_at=acknowledged_at)
        wanted = [Allocation(inv["invoice_id"], amount, "manual", body.reason) for _, inv, amount in checked]
        try:
            await allocations.allocate(conn, payment, wanted, allocated_by="api", excess_to_credit=False)
        except allocations.AllocationError as exc:
            raise invalid(exc.field, exc.message, exc.status) from None
        customers = {inv["customer_id"] for _, inv, _ in checked}
        learned = None
        if body.remember_payer and row["payer_account"] and len(customers) == 1 and None not in customers:
            learned = customers.pop()
            await match_repo.learn_payer_account(conn, tenant_id, row["payer_account"], learned, payment_id)
        [view] = await payment_views(conn, [await repo.get_payment(conn, tenant_id, payment_id)])
        if idempotency_key is not None:
            await queue_repo.store_allocation_request(
                conn,
                tenant_id,
                idempotency_key,
                payment_id=payment_id,
                fingerprint=fingerprint,
                status=201,
                response=view,
            )
    log.info(
        "reconciliation.payment.allocated_by_hand",
        payment_id=payment_id,
        invoice_ids=[inv["invoice_id"] for _, inv, _ in checked],
        payer_account_learned=learned is not None,
    )
    return 201, view, False


async def undo_allocation(
    pool: asyncpg.Pool, tenant_id: str, payment_id: str, allocation_id: str, *, reason: str
) -> dict[str, Any]:
    """Undo one allocation (its amount back on the invoice's balance, the money back in the queue).
    The payer's account learnt from this payment is forgotten once none of its allocations is left."""
    async with pool.acquire() as conn, conn.transaction():
        await repo.acknowledge_time(conn)  # first: the watermark's fence
        try:  # 404: no such payment or allocation; 409: undone or taken back already
            await allocations.unallocate(conn, tenant_id, payment_id, allocation_id, reason=reason, by="api")
        except allocations.AllocationError as exc:
            raise invalid(exc.field, exc.message, exc.status) from None
        row = await repo.get_payment(conn, tenant_id, payment_id)
        assert row is not None, "unallocate found it, in this transaction"
        if row["payer_account"] and not await repo.lock_active_allocations(conn, payment_id):
            await match_repo.forget_payer_account(conn, tenant_id, row["payer_account"], payment_id)
        [view] = await payment_views(conn, [row])
    log.info("reconciliation.payment.unallocated_by_hand", payment_id=payment_id, allocation_id=allocation_id)
    return view
