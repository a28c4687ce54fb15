"""reconciliation's HTTP routes.

- `POST /v1/webhooks/stripe/{tenant_id}`  Stripe webhook endpoint (authenticated by the signature)
- `POST /v1/payments`                     a payment reported by the accounting system (API key)
- `GET  /v1/payments`                     the tenant's payments, optionally for one invoice (API key)
- `/healthz`, `/readyz`, `/docs`
"""

from dataclasses import dataclass

import asyncpg
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse

from dunning.http import (NO_FASTAPI_TELEMETRY, Problem, install_health, install_problem_handlers, install_tracing,
                          tenant_for_key)

from dunning_reconciliation import payments, webhooks
from dunning_reconciliation import repository as repo
from dunning_reconciliation.schemas import PaymentIn, PaymentList, PaymentOut, WebhookAck, payment_view
from dunning_reconciliation.settings import Settings

PROBLEM_RESPONSES = {code: {"description": text, "content": {"application/problem+json": {}}} for code, text in {
    400: "Not JSON", 401: "Missing or unknown API key", 409: "Reference reused with different content",
    422: "Invalid field (named in `errors`)",
}.items()}


@dataclass
class Deps:
    pool: asyncpg.Pool
    settings: Settings


def create_app(deps: Deps) -> FastAPI:
    app = FastAPI(title="dunning reconciliation", version="1.0.0", telemetry=NO_FASTAPI_TELEMETRY,
                  description="Matches payments (Stripe webhooks, the accounting system) to invoices "
                              "and publishes PaymentReceived.")
    install_problem_handlers(app)
    install_tracing(app, deps.settings.service_name)
    install_health(app, lambda: deps.pool)

    async def tenant(authorization: str | None = Header(None)) -> str:
        return await tenant_for_key(deps.pool, authorization)

    @app.post(
        "/v1/webhooks/stripe/{tenant_id}", response_model=WebhookAck, tags=["webhooks"],
        summary="Receive a Stripe event (signed with the tenant's endpoint secret)",
        responses={400: {"description": "Signature refused, or the event cannot be read",
                         "content": {"application/problem+json": {}}},
                   413: {"description": "Body too large", "content": {"application/problem+json": {}}}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "description": "A Stripe Event object, as Stripe sends it."}}}}},
    )
    async def stripe_webhook(tenant_id: str, request: Request,
                             stripe_signature: str | None = Header(None, alias="Stripe-Signature")):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > deps.settings.webhook_max_body_bytes:
            raise Problem(413, "The body is larger than any Stripe event.")
        body = await request.body()  # the raw bytes Stripe signed: never re-serialise before verifying
        if len(body) > deps.settings.webhook_max_body_bytes:
            raise Problem(413, "The body is larger than any Stripe event.")
        return await webhooks.receive_stripe_event(
            deps.pool, tenant_id, stripe_signature, body, tolerance=deps.settings.webhook_tolerance_seconds,
        )

    @app.post("/v1/payments", status_code=201, response_model=PaymentOut, tags=["payments"],
              summary="Report a payment received by the accounting system",
              responses={200: {"model": PaymentOut, "description": "Same reference and content: the first result"},
                         **PROBLEM_RESPONSES})
    async def create_payment(body: PaymentIn, tenant_id: str = Depends(tenant)):
        status, view = await payments.record_payment(deps.pool, tenant_id, body)
        return JSONResponse(view, status_code=status)

    @app.get("/v1/payments", response_model=PaymentList, tags=["payments"],
             summary="List the tenant's payments (oldest first)", responses=PROBLEM_RESPONSES)
    async def list_payments(tenant_id: str = Depends(tenant),
                            invoice_id: str | None = Query(None, max_length=64),
                            after: str | None = Query(None, max_length=64, description="payment_id cursor"),
                            limit: int = Query(100, ge=1, le=500)):
        rows = await repo.list_payments(deps.pool, tenant_id, invoice_id=invoice_id, after=after, limit=limit)
        data = [payment_view(r) for r in rows]
        return {"data": data, "next_after": data[-1]["payment_id"] if len(data) == limit else None}

    return app
