"""reconciliation's routes of the payments listing and the unmatched queue (issue 11).

- `GET    /v1/payments`                                    the tenant's payments, filtered (status
  `unmatched`: the queue, each with suggested invoices), each with its allocations (API key)
- `POST   /v1/payments/{payment_id}/allocations`            allocate a payment's money by hand (API key)
- `DELETE /v1/payments/{payment_id}/allocations/{allocation_id}` undo one allocation (API key)
"""

import re
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Query
from fastapi.responses import JSONResponse

from dunning.http import Cursor, Page, TenantId, decode_cursor, limit_query
from dunning.http.pagination import encode_cursor
from dunning_reconciliation import queue
from dunning_reconciliation.queue_schemas import SOURCES, STATUSES, AllocateIn, QueuedPaymentOut, UnallocateIn

_PAYMENT_ID = re.compile(r"^pay_[0-9A-Za-z]{10,40}$")
_MAX_KEY = 255
PaymentIdPath = Annotated[str, Path(max_length=64, description="The payment's id (pay_…).")]


def _key(value: str | None) -> str | None:
    if value is not None and (not value.strip() or len(value) > _MAX_KEY):
        raise queue.invalid("Idempotency-Key", f"must be 1 to {_MAX_KEY} characters", status=400)
    return value


def _payment_id(payment_id: str) -> str:
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise queue.invalid("payment_id", f"no payment {payment_id!r}", status=404)
    return payment_id


def register(app: FastAPI, deps) -> None:
    @app.get(
        "/v1/payments",
        response_model=Page[QueuedPaymentOut],
        tags=["payments"],
        operation_id="listPayments",
        summary="List the tenant's payments (oldest first); `status=unmatched` is the queue, with suggestions",
    )
    async def list_payments(
        tenant_id: TenantId,
        invoice_id: Annotated[str | None, Query(max_length=64, description="Payments allocated to it")] = None,
        status: Annotated[
            str | None,
            Query(
                description="One status; `unmatched` (or `pending_match`): the queue",
                json_schema_extra={"enum": list(STATUSES)},
            ),
        ] = None,
        customer_id: Annotated[str | None, Query(max_length=100)] = None,
        source: Annotated[str | None, Query(json_schema_extra={"enum": list(SOURCES)})] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        if status is not None and status not in STATUSES:
            raise queue.invalid("status", f"one of {', '.join(STATUSES)}")
        if source is not None and source not in SOURCES:
            raise queue.invalid("source", f"one of {', '.join(SOURCES)}")
        after = decode_cursor(cursor, _PAYMENT_ID)
        views = await queue.list_payments(
            deps.pool,
            tenant_id,
            invoice_id=invoice_id,
            status=status,
            customer_id=customer_id,
            source=source,
            after=after,
            limit=limit + 1,
        )
        kept = views[:limit]
        more = len(views) > limit
        return {"data": kept, "next_cursor": encode_cursor(kept[-1]["payment_id"]) if more else None}

    @app.post(
        "/v1/payments/{payment_id}/allocations",
        status_code=201,
        response_model=QueuedPaymentOut,
        tags=["payments"],
        operation_id="allocatePayment",
        summary="Allocate a payment's unallocated money by hand to one or several invoices",
        responses={
            200: {"model": QueuedPaymentOut, "description": "Same Idempotency-Key and request: the first answer"},
            404: {"description": "No such payment for this tenant"},
            409: {"description": "The payment has nothing left to allocate (or is not in a state that allows it)"},
            422: {
                "description": "An invoice unknown, not open, in another currency; an amount beyond the invoice's "
                "open balance, the payment's unallocated money or the currency's decimals (the field named, "
                "e.g. `allocations[1].amount`); an Idempotency-Key reused with another request"
            },
        },
    )
    async def allocate_payment(
        payment_id: PaymentIdPath,
        body: AllocateIn,
        tenant_id: TenantId,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Optional: the same key and request answer the first result again.",
                json_schema_extra={"minLength": 1, "maxLength": _MAX_KEY, "pattern": "\\S"},
            ),
        ] = None,
    ) -> JSONResponse:
        status, view, replayed = await queue.allocate_by_hand(
            deps.pool, tenant_id, _payment_id(payment_id), body, idempotency_key=_key(idempotency_key)
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(view, status_code=200 if replayed else status, headers=headers)

    @app.delete(
        "/v1/payments/{payment_id}/allocations/{allocation_id}",
        response_model=QueuedPaymentOut,
        tags=["payments"],
        operation_id="unallocatePayment",
        summary="Undo one allocation: its amount back on the invoice's balance, the money back in the queue",
        responses={
            404: {"description": "No such payment, or no such allocation of it"},
            409: {"description": "The allocation was undone (or taken back by a reversal) already"},
        },
    )
    async def unallocate_payment(
        payment_id: PaymentIdPath,
        allocation_id: Annotated[str, Path(max_length=64, description="The allocation's id (alc_…).")],
        tenant_id: TenantId,
        body: Annotated[UnallocateIn | None, Body()] = None,
    ) -> dict[str, Any]:
        reason = body.reason if body is not None else UnallocateIn().reason
        return await queue.undo_allocation(deps.pool, tenant_id, _payment_id(payment_id), allocation_id, reason=reason)
