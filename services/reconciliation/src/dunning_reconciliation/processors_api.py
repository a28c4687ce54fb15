"""Webhook endpoints of the processors other than Stripe (authenticated by their signatures):

- `POST /v1/webhooks/gocardless/{tenant_id}`  GoCardless (Webhook-Signature; 498 when it is wrong)
- `POST /v1/webhooks/standard/{tenant_id}`    Standard Webhooks (webhook-id / -timestamp / -signature)

Each verifies the raw body against the tenant's active secrets of that processor (rotated through
/v1/webhook-secrets), reads it whole (a bad body: 400 naming the field, nothing changed), then hands
its events to processors.inbound. docs/processors.md is the merchant's side of it.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from pydantic import BaseModel

from dunning.clock import utcnow
from dunning.http import Problem, json_body
from dunning.logging import get_logger
from dunning_reconciliation import webhook_secrets
from dunning_reconciliation.processors import events as ev
from dunning_reconciliation.processors import gocardless, inbound
from dunning_reconciliation.processors import standard_webhooks as sw

log = get_logger(__name__)

_GOCARDLESS_EXAMPLE = {
    "events": [
        {
            "id": "EV00BD05S5VM2T",
            "created_at": "2026-11-30T09:13:51.404Z",
            "resource_type": "payments",
            "action": "confirmed",
            "links": {"payment": "PM000260X9VKF4"},
            "details": {
                "origin": "gocardless",
                "cause": "payment_confirmed",
                "description": "Enough time has passed since the payment was submitted for the banks to "
                "return an error, so this payment is now confirmed.",
            },
            "metadata": {},
            "resource_metadata": {
                "invoice_id": "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA",
                "amount": "125000",
                "currency": "EUR",
            },
        }
    ]
}
_STANDARD_EXAMPLE = {
    "type": "payment.succeeded",
    "timestamp": "2026-11-30T09:13:51Z",
    "data": {
        "id": "pay_7f3k2",
        "amount": "1250.00",
        "currency": "EUR",
        "invoice_external_id": "INV-2026-00412",
        "payer": {"name": "ACME GmbH", "account": "DE89370400440532013000"},
    },
}


class EventResult(BaseModel):
    id: str
    status: str
    payment_id: str | None = None


class GoCardlessAck(BaseModel):
    events: list[EventResult]


def _unreadable(exc: ev.EventError) -> Problem:
    log.warning("reconciliation.processor_webhook.unreadable", field=exc.field, error=exc.message)
    return Problem(400, str(exc), errors=[{"field": exc.field, "message": exc.message}])


def _refused(processor: str, tenant_id: str, exc: ev.SignatureError, status: int, title: str | None = None) -> Problem:
    log.warning("reconciliation.processor_webhook.refused", processor=processor, tenant_id=tenant_id, reason=str(exc))
    return Problem(status, str(exc), title=title, errors=[{"field": exc.field, "message": str(exc)}])


def register(app: FastAPI, deps: Any) -> None:
    @app.post(
        "/v1/webhooks/gocardless/{tenant_id}",
        response_model=GoCardlessAck,
        tags=["webhooks"],
        operation_id="receiveGoCardlessEvents",
        summary="Receive GoCardless events (signed with the tenant's GoCardless endpoint secret)",
        responses={
            400: {"description": "The events cannot be read (the field is named); nothing was applied"},
            498: {"description": "Invalid Token: the Webhook-Signature does not match (GoCardless's convention)"},
        },
        openapi_extra=json_body(
            {"type": "object", "description": "GoCardless's webhook body.", "example": _GOCARDLESS_EXAMPLE}
        ),
    )
    async def gocardless_webhook(
        tenant_id: Annotated[str, Path(max_length=100)],
        request: Request,
        signature: Annotated[str | None, Header(alias="Webhook-Signature")] = None,
    ) -> dict[str, Any]:
        body = await request.body()  # the raw bytes GoCardless signed
        secrets = await webhook_secrets.active(deps.pool, tenant_id, gocardless.PROCESSOR)
        try:
            gocardless.verify(body, signature, secrets)
        except ev.SignatureError as exc:
            raise _refused(gocardless.PROCESSOR, tenant_id, exc, gocardless.INVALID_TOKEN, "Invalid Token") from None
        try:
            events = gocardless.parse(tenant_id, body)
        except ev.EventError as exc:
            raise _unreadable(exc) from None
        return {"events": await inbound.receive(deps.pool, tenant_id, events)}

    @app.post(
        "/v1/webhooks/standard/{tenant_id}",
        response_model=EventResult,
        tags=["webhooks"],
        operation_id="receiveStandardWebhook",
        summary="Receive a Standard Webhooks payment event (signed with the tenant's whsec_ secret)",
        responses={
            400: {"description": "Signature refused or stale, or the event cannot be read; nothing was applied"}
        },
        openapi_extra=json_body(
            {"type": "object", "description": "Our payment event vocabulary.", "example": _STANDARD_EXAMPLE}
        ),
    )
    async def standard_webhook(tenant_id: Annotated[str, Path(max_length=100)], request: Request) -> dict[str, Any]:
        body = await request.body()
        secrets = await webhook_secrets.active(deps.pool, tenant_id, sw.PROCESSOR)
        try:
            event_id = sw.verify(body, request.headers, secrets)
        except ev.SignatureError as exc:
            raise _refused(sw.PROCESSOR, tenant_id, exc, 400) from None
        if len(event_id) > 255:
            raise Problem.invalid("webhook-id", "at most 255 characters", "too_long", status=400)
        try:
            event = sw.parse(tenant_id, event_id, body, received_at=utcnow())
        except ev.EventError as exc:
            raise _unreadable(exc) from None
        [result] = await inbound.receive(deps.pool, tenant_id, [event])
        return result
