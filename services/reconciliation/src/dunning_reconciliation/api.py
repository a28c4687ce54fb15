"""reconciliation's HTTP routes (each area's own module registers its routes at the end of create_app).

- `POST /v1/webhooks/stripe/{tenant_id}`  Stripe webhook endpoint (authenticated by the signature)
- `POST /v1/payments`                     a payment reported by the accounting system (API key)
- `POST /v1/credit-notes`                 a credit note issued by the accounting system (API key)
- `GET  /v1/credit-notes`, `/{id}`        the tenant's credit notes, optionally for one invoice (API key)
- `GET  /v1/write-offs`                   the write-off report for a period, totals per currency (API key)
- secrets_api:     `GET`, `POST /v1/webhook-secrets`, `DELETE /v1/webhook-secrets/{secret_id}`
- statements_api:  `POST /v1/statements`, `GET /v1/statements`, `/{statement_id}`, `/{statement_id}/lines`
- processors_api:  `POST /v1/webhooks/gocardless/{tenant_id}`, `POST /v1/webhooks/standard/{tenant_id}`
- queue_api:       `GET /v1/payments` (`status=unmatched`: the queue), `POST /v1/payments/{id}/allocations`,
                   `DELETE /v1/payments/{id}/allocations/{allocation_id}`
- credits_api:     `GET /v1/customers/{customer_id}/credit`
- `/healthz`, `/readyz`, `/metrics`, `/docs`
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from dunning.http import (
    Cursor,
    Page,
    Problem,
    TenantId,
    decode_cursor,
    json_body,
    limit_query,
    page,
    service_app,
)
from dunning_reconciliation import (
    credit_notes,
    credits_api,
    payments,
    processors_api,
    queue_api,
    secrets_api,
    statements_api,
    webhooks,
    write_offs,
)
from dunning_reconciliation import repository as repo
from dunning_reconciliation.schemas import (
    CreditNoteIn,
    CreditNoteOut,
    PaymentIn,
    PaymentOut,
    WebhookAck,
    WriteOffReport,
    credit_note_view,
)
from dunning_reconciliation.settings import Settings

TAGS = [
    {"name": "webhooks", "description": "Payment events from payment providers, signed."},
    {"name": "payments", "description": "Payments reported by the accounting system, and every payment seen."},
    {"name": "credit-notes", "description": "Credit notes issued by the accounting system, applied to balances."},
    {"name": "reports", "description": "Write-offs for a period, with totals per currency."},
]
_CREDIT_NOTE_ID = re.compile(r"^cn_[0-9A-Za-z]{10,40}$")
_STRIPE_EXAMPLE = {
    "id": "evt_1QF7cD2eZvKYlo2C",
    "object": "event",
    "api_version": "2024-06-20",
    "created": 1763456400,
    "livemode": False,
    "type": "invoice.paid",
    "data": {
        "object": {
            "id": "in_1QF7cC2eZvKYlo2C",
            "object": "invoice",
            "number": "INV-2026-00412",
            "amount_paid": 125000,
            "currency": "eur",
            "metadata": {"dunning_invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"},
        }
    },
}


@dataclass
class Deps:
    pool: asyncpg.Pool
    settings: Settings


def create_app(deps: Deps) -> FastAPI:
    app = service_app(
        distribution="dunning-reconciliation",
        settings=deps.settings,
        pool=deps.pool,
        tags=TAGS,
        description="Matches payments (Stripe webhooks, the accounting system) to invoices and "
        "publishes PaymentReceived.",
        max_body_bytes=deps.settings.webhook_max_body_bytes,
        body_limits={"/v1/statements": deps.settings.statement_max_body_bytes},
    )

    @app.post(
        "/v1/webhooks/stripe/{tenant_id}",
        response_model=WebhookAck,
        tags=["webhooks"],
        operation_id="receiveStripeEvent",
        summary="Receive a Stripe event (signed with the tenant's endpoint secret)",
        responses={400: {"description": "Signature refused, or the event cannot be read"}},
        openapi_extra=json_body(
            {"type": "object", "description": "A Stripe Event object, as Stripe sends it.", "example": _STRIPE_EXAMPLE}
        ),
    )
    async def stripe_webhook(
        tenant_id: Annotated[str, Path(max_length=100)],
        request: Request,
        stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
    ) -> dict[str, Any]:
        body = await request.body()  # the raw bytes Stripe signed: never re-serialise before verifying
        return await webhooks.receive_stripe_event(
            deps.pool,
            tenant_id,
            stripe_signature,
            body,
            tolerance=deps.settings.webhook_tolerance_seconds,
        )

    @app.post(
        "/v1/payments",
        status_code=201,
        response_model=PaymentOut,
        tags=["payments"],
        operation_id="createPayment",
        summary="Report a payment received by the accounting system",
        responses={
            200: {"model": PaymentOut, "description": "Same reference and content: the first result"},
            409: {"description": "The reference was reported before with different content"},
        },
    )
    async def create_payment(body: PaymentIn, tenant_id: TenantId) -> JSONResponse:
        status, view = await payments.record_payment(deps.pool, tenant_id, body)
        return JSONResponse(view, status_code=status)

    @app.post(
        "/v1/credit-notes",
        status_code=201,
        response_model=CreditNoteOut,
        tags=["credit-notes"],
        operation_id="createCreditNote",
        summary="Apply a credit note issued by the accounting system to an invoice's balance",
        responses={
            200: {"model": CreditNoteOut, "description": "Same reference and content: the first result"},
            404: {"description": "No such invoice for this tenant (the field that named it)"},
            409: {
                "description": "The reference was used before with different content (`reference`), or the "
                "invoice is void, written off (code `invoice_closed`) or already settled (`invoice_settled`)"
            },
        },
    )
    async def create_credit_note(body: CreditNoteIn, tenant_id: TenantId) -> JSONResponse:
        status, view = await credit_notes.record_credit_note(deps.pool, tenant_id, body)
        return JSONResponse(view, status_code=status)

    @app.get(
        "/v1/credit-notes",
        response_model=Page[CreditNoteOut],
        tags=["credit-notes"],
        operation_id="listCreditNotes",
        summary="List the tenant's credit notes (oldest first)",
    )
    async def list_credit_notes(
        tenant_id: TenantId,
        invoice_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        after = decode_cursor(cursor, _CREDIT_NOTE_ID)
        rows = await repo.list_credit_notes(deps.pool, tenant_id, invoice_id=invoice_id, after=after, limit=limit + 1)
        return page(rows, limit, key=lambda r: r["credit_note_id"], view=credit_note_view)

    @app.get(
        "/v1/credit-notes/{credit_note_id}",
        response_model=CreditNoteOut,
        tags=["credit-notes"],
        operation_id="getCreditNote",
        summary="One credit note",
        responses={404: {"description": "No such credit note for this tenant"}},
    )
    async def get_credit_note(
        credit_note_id: Annotated[str, Path(max_length=64)], tenant_id: TenantId
    ) -> dict[str, Any]:
        row = None
        if _CREDIT_NOTE_ID.fullmatch(credit_note_id):
            row = await repo.get_credit_note(deps.pool, tenant_id, credit_note_id)
        if row is None:
            raise Problem.not_found("credit_note_id", f"No credit note {credit_note_id!r}.")
        return credit_note_view(row)

    @app.get(
        "/v1/write-offs",
        response_model=WriteOffReport,
        tags=["reports"],
        operation_id="listWriteOffs",
        summary="Write-offs in a period (oldest first), with totals per currency for the whole period",
    )
    async def list_write_offs(
        tenant_id: TenantId,
        start: Annotated[
            AwareDatetime | None,
            Query(alias="from", description="From this instant (inclusive), with a UTC offset"),
        ] = None,
        end: Annotated[
            AwareDatetime | None,
            Query(alias="to", description="Up to this instant (exclusive), with a UTC offset"),
        ] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        return await write_offs.report(deps.pool, tenant_id, start=start, end=end, cursor=cursor, limit=limit)

    secrets_api.register(app, deps)
    statements_api.register(app, deps)
    processors_api.register(app, deps)
    queue_api.register(app, deps)  # GET /v1/payments (the unmatched queue), manual allocations
    credits_api.register(app, deps)  # GET /v1/customers/{customer_id}/credit
    return app
