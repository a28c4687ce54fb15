"""The webhook secrets' rotation API (API key):

- `GET    /v1/webhook-secrets?processor=`  the tenant's secrets, masked, with their status
- `POST   /v1/webhook-secrets`             store a new secret; the previous ones expire after the overlap
- `DELETE /v1/webhook-secrets/{secret_id}` revoke a secret now
"""

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse

from dunning.http import TenantId
from dunning_reconciliation import webhook_secrets
from dunning_reconciliation.secrets_schemas import (
    Processor,
    WebhookSecretCreated,
    WebhookSecretIn,
    WebhookSecretList,
    WebhookSecretOut,
)

TAG = {"name": "webhook-secrets", "description": "Signing secrets of the webhook endpoints, per processor."}


def register(app: FastAPI, deps: Any) -> None:
    if not any(t["name"] == TAG["name"] for t in app.openapi_tags or []):
        app.openapi_tags = [*(app.openapi_tags or []), TAG]

    @app.get(
        "/v1/webhook-secrets",
        response_model=WebhookSecretList,
        tags=["webhook-secrets"],
        operation_id="listWebhookSecrets",
        summary="List the tenant's webhook secrets (masked), optionally for one processor",
    )
    async def list_webhook_secrets(
        tenant_id: TenantId, processor: Annotated[Processor | None, Query()] = None
    ) -> dict[str, Any]:
        return {"data": await webhook_secrets.list_secrets(deps.pool, tenant_id, processor)}

    @app.post(
        "/v1/webhook-secrets",
        status_code=201,
        response_model=WebhookSecretCreated,
        tags=["webhook-secrets"],
        operation_id="createWebhookSecret",
        summary="Store a processor's new signing secret (answered once in full); the previous ones expire "
        "after the overlap",
        responses={409: {"description": "This secret is stored already (`secret`)"}},
    )
    async def create_webhook_secret(body: WebhookSecretIn, tenant_id: TenantId) -> JSONResponse:
        view = await webhook_secrets.rotate(deps.pool, tenant_id, body.processor, body.secret, body.overlap_seconds)
        return JSONResponse(view, status_code=201, headers={"Cache-Control": "no-store"})

    @app.delete(
        "/v1/webhook-secrets/{secret_id}",
        response_model=WebhookSecretOut,
        tags=["webhook-secrets"],
        operation_id="revokeWebhookSecret",
        summary="Revoke a webhook secret now (requests signed with it are refused)",
        responses={404: {"description": "No such secret for this tenant"}},
    )
    async def revoke_webhook_secret(
        secret_id: Annotated[str, Path(max_length=64)], tenant_id: TenantId
    ) -> dict[str, Any]:
        return await webhook_secrets.revoke(deps.pool, tenant_id, secret_id)
