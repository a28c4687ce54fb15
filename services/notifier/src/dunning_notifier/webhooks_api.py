"""The webhook routes of the notifier (registered by api.create_app through `webhook_routes`):

GET    /v1/webhook-event-types                          the catalogue of public event types
POST   /v1/webhook-endpoints                            subscribe an endpoint (201; its secret, shown once)
GET    /v1/webhook-endpoints                            the tenant's endpoints, newest first
GET    /v1/webhook-endpoints/{endpoint_id}              one endpoint (enabled, or disabled: why and when)
PATCH  /v1/webhook-endpoints/{endpoint_id}              url, event_types, description, enabled
DELETE /v1/webhook-endpoints/{endpoint_id}              unsubscribe (its messages and attempts go too)
POST   /v1/webhook-endpoints/{endpoint_id}/secret/rotate  a new secret; the old one signs too for an overlap
GET    /v1/webhook-endpoints/{endpoint_id}/attempts     every attempt, newest first
GET    /v1/webhook-messages                             messages, by event_type / status / endpoint_id
GET    /v1/webhook-messages/{message_id}                one message
POST   /v1/webhook-messages/{message_id}/replay         send it again (202; 409 if its endpoint is disabled)
"""

import re
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Path, Query, Response

from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page
from dunning.ids import new_id
from dunning_notifier import webhooks_http
from dunning_notifier import webhooks_repository as repo
from dunning_notifier.webhooks_catalogue import EVENT_TYPES
from dunning_notifier.webhooks_schemas import (
    ATTEMPT_ID,
    ENDPOINT_ID,
    MESSAGE_ID,
    AttemptOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    EventTypeOut,
    MessageOut,
    MessageState,
)

if TYPE_CHECKING:
    from dunning_notifier.api import ApiDeps

TAG = {
    "name": "webhooks",
    "description": "Outbound webhooks (Standard Webhooks): endpoints subscribed to event types, the messages"
    " sent to them and every attempt. See docs/webhooks.md for the catalogue and how to verify signatures.",
}
EndpointId = Annotated[str, Path(max_length=64, description="The endpoint's id (`whe_...`)")]
MessageId = Annotated[str, Path(max_length=64, description="The message's id (`msg_...`), its `webhook-id`")]
_ENDPOINT, _MESSAGE, _ATTEMPT = re.compile(ENDPOINT_ID), re.compile(MESSAGE_ID), re.compile(ATTEMPT_ID)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such endpoint for this tenant"}}


def _message_out(row: Any) -> MessageOut:
    data = {k: row[k] for k in row.keys() if k in MessageOut.model_fields}
    if row["state"] != "pending":
        data["next_attempt_at"] = None
    return MessageOut(**data, payload=orjson.loads(row["body"]))


def _secret_out(row: Any, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(**EndpointOut.of(row).model_dump(), secret=secret)


def webhook_routes(app: FastAPI, deps: "ApiDeps") -> None:
    """Register the webhook routes on the app, on the app's pool."""
    app.openapi_tags = [*(app.openapi_tags or []), TAG]
    overlap = float(getattr(deps.settings, "webhook_secret_overlap_seconds", 86400.0))

    async def endpoint_or_404(tenant_id: str, endpoint_id: str) -> asyncpg.Record:
        row = await repo.get_endpoint(deps.pool, tenant_id, endpoint_id) if _ENDPOINT.fullmatch(endpoint_id) else None
        if row is None:
            raise Problem.not_found("endpoint_id", f"No webhook endpoint {endpoint_id!r} for this tenant.")
        return row

    @app.get(
        "/v1/webhook-event-types",
        response_model=list[EventTypeOut],
        tags=["webhooks"],
        operation_id="listWebhookEventTypes",
        summary="The event types an endpoint can subscribe to",
        description="The public catalogue; each type's payload is documented in docs/webhooks.md.",
    )
    async def list_event_types(tenant_id: TenantId) -> list[EventTypeOut]:
        return [EventTypeOut(event_type=t, description=d) for t, d in EVENT_TYPES.items()]

    @app.post(
        "/v1/webhook-endpoints",
        status_code=201,
        response_model=EndpointWithSecret,
        tags=["webhooks"],
        operation_id="createWebhookEndpoint",
        summary="Subscribe an endpoint to event types",
        description="Every event of a subscribed type is POSTed to `url` as JSON `{type, timestamp, data}`, signed"
        " per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`). The answer carries the"
        " signing `secret` (`whsec_...`): this is the only time it is shown.",
        responses={201: {"description": "The endpoint, enabled, with its secret"}},
    )
    async def create_endpoint(tenant_id: TenantId, endpoint: EndpointIn) -> EndpointWithSecret:
        secret = webhooks_http.new_secret()
        row = await repo.insert_endpoint(
            deps.pool,
            endpoint_id=new_id("whe"),
            tenant_id=tenant_id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=endpoint.event_types,
            secret=secret,
        )
        return _secret_out(row, secret)

    @app.get(
        "/v1/webhook-endpoints",
        response_model=Page[EndpointOut],
        tags=["webhooks"],
        operation_id="listWebhookEndpoints",
        summary="The tenant's webhook endpoints, newest first",
    )
    async def list_endpoints(
        tenant_id: TenantId, limit: Annotated[int, limit_query(100, 500)] = 100, cursor: Cursor = None
    ) -> dict[str, Any]:
        rows = await repo.list_endpoints(deps.pool, tenant_id, before=decode_cursor(cursor, _ENDPOINT), limit=limit + 1)
        return page(rows, limit, key=lambda r: r["endpoint_id"], view=EndpointOut.of)

    @app.get(
        "/v1/webhook-endpoints/{endpoint_id}",
        response_model=EndpointOut,
        tags=["webhooks"],
        operation_id="getWebhookEndpoint",
        summary="One webhook endpoint",
        description="`enabled: false` with `disabled_reason` `failing: ...` and `disabled_at`: the sender gave up"
        " on it (settings `webhook_disable_after_failures` / `webhook_disable_after_seconds`); PATCH"
        " `enabled: true` turns it back on, and its waiting messages go.",
        responses=_NOT_FOUND,
    )
    async def get_endpoint(endpoint_id: EndpointId, tenant_id: TenantId) -> EndpointOut:
        return EndpointOut.of(await endpoint_or_404(tenant_id, endpoint_id))

    @app.patch(
        "/v1/webhook-endpoints/{endpoint_id}",
        response_model=EndpointOut,
        tags=["webhooks"],
        operation_id="updateWebhookEndpoint",
        summary="Change an endpoint's url, event types, description, or enable/disable it",
        description="Fields left out are kept. `enabled: true` re-enables a disabled endpoint and clears its"
        " failure streak; `enabled: false` disables it (`disabled_by_tenant`): its messages wait, unsent.",
        responses=_NOT_FOUND,
    )
    async def update_endpoint(endpoint_id: EndpointId, tenant_id: TenantId, change: EndpointPatch) -> EndpointOut:
        await endpoint_or_404(tenant_id, endpoint_id)
        row = await repo.update_endpoint(
            deps.pool,
            tenant_id,
            endpoint_id,
            url=change.url,
            description=change.description,
            event_types=change.event_types,
            enabled=change.enabled,
        )
        if row is None:  # deleted meanwhile
            raise Problem.not_found("endpoint_id", f"No webhook endpoint {endpoint_id!r} for this tenant.")
        return EndpointOut.of(row)

    @app.delete(
        "/v1/webhook-endpoints/{endpoint_id}",
        status_code=204,
        response_class=Response,
        tags=["webhooks"],
        operation_id="deleteWebhookEndpoint",
        summary="Delete an endpoint, with its messages and attempts",
        responses={204: {"description": "Deleted"}, **_NOT_FOUND},
    )
    async def delete_endpoint(endpoint_id: EndpointId, tenant_id: TenantId) -> Response:
        if not _ENDPOINT.fullmatch(endpoint_id) or not await repo.delete_endpoint(deps.pool, tenant_id, endpoint_id):
            raise Problem.not_found("endpoint_id", f"No webhook endpoint {endpoint_id!r} for this tenant.")
        return Response(status_code=204)

    @app.post(
        "/v1/webhook-endpoints/{endpoint_id}/secret/rotate",
        response_model=EndpointWithSecret,
        tags=["webhooks"],
        operation_id="rotateWebhookSecret",
        summary="Rotate the endpoint's signing secret",
        description="A new secret signs from now on. The previous one keeps signing too until"
        " `previous_secret_expires_at` (setting `webhook_secret_overlap_seconds`, default 24 h): meanwhile"
        " `webhook-signature` carries both signatures, space separated, so a receiver verifies with either."
        " Rotating again during an overlap drops the oldest secret.",
        responses=_NOT_FOUND,
    )
    async def rotate_secret(endpoint_id: EndpointId, tenant_id: TenantId) -> EndpointWithSecret:
        await endpoint_or_404(tenant_id, endpoint_id)
        secret = webhooks_http.new_secret()
        row = await repo.rotate_secret(deps.pool, tenant_id, endpoint_id, secret, overlap)
        if row is None:
            raise Problem.not_found("endpoint_id", f"No webhook endpoint {endpoint_id!r} for this tenant.")
        return _secret_out(row, secret)

    @app.get(
        "/v1/webhook-endpoints/{endpoint_id}/attempts",
        response_model=Page[AttemptOut],
        tags=["webhooks"],
        operation_id="listWebhookAttempts",
        summary="Every attempt to deliver to the endpoint, newest first",
        description="When, the status code (null: no answer), the first 500 characters of the answer, how long"
        " it took, and the error. Includes the `webhook` reminder channel's posts (trigger `reminder`).",
        responses=_NOT_FOUND,
    )
    async def list_attempts(
        endpoint_id: EndpointId,
        tenant_id: TenantId,
        message_id: Annotated[str | None, Query(pattern=MESSAGE_ID, description="only this message's")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        await endpoint_or_404(tenant_id, endpoint_id)
        rows = await repo.list_attempts(
            deps.pool,
            tenant_id,
            endpoint_id,
            message_id=message_id,
            before=decode_cursor(cursor, _ATTEMPT),
            limit=limit + 1,
        )
        return page(rows, limit, key=lambda r: r["attempt_id"], view=lambda r: AttemptOut(**dict(r)))

    @app.get(
        "/v1/webhook-messages",
        response_model=Page[MessageOut],
        tags=["webhooks"],
        operation_id="listWebhookMessages",
        summary="The tenant's webhook messages, newest first",
    )
    async def list_messages(
        tenant_id: TenantId,
        event_type: Annotated[str | None, Query(max_length=64, description="only this event type")] = None,
        status: Annotated[MessageState | None, Query(description="only messages in this state")] = None,
        endpoint_id: Annotated[str | None, Query(pattern=ENDPOINT_ID, description="only this endpoint's")] = None,
        limit: Annotated[int, limit_query(100, 500)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        if event_type is not None and event_type not in EVENT_TYPES:
            raise Problem.invalid("event_type", f"unknown event type {event_type!r}", "unknown_event_type")
        rows = await repo.list_messages(
            deps.pool,
            tenant_id,
            event_type=event_type,
            state=status,
            endpoint_id=endpoint_id,
            before=decode_cursor(cursor, _MESSAGE),
            limit=limit + 1,
        )
        return page(rows, limit, key=lambda r: r["message_id"], view=_message_out)

    @app.get(
        "/v1/webhook-messages/{message_id}",
        response_model=MessageOut,
        tags=["webhooks"],
        operation_id="getWebhookMessage",
        summary="One webhook message",
        responses={404: {"description": "No such message for this tenant"}},
    )
    async def get_message(message_id: MessageId, tenant_id: TenantId) -> MessageOut:
        row = await repo.get_message(deps.pool, tenant_id, message_id) if _MESSAGE.fullmatch(message_id) else None
        if row is None:
            raise Problem.not_found("message_id", f"No webhook message {message_id!r} for this tenant.")
        return _message_out(row)

    @app.post(
        "/v1/webhook-messages/{message_id}/replay",
        status_code=202,
        response_model=MessageOut,
        tags=["webhooks"],
        operation_id="replayWebhookMessage",
        summary="Send a message again",
        description="The message is due again at once, with a fresh retry budget, whatever its state (delivered"
        " or failed); same `webhook-id`, newly signed. A replay does not re-enable a disabled endpoint: it is"
        " refused (409 `endpoint_disabled`) until PATCH `enabled: true`. 409 `attempt_in_flight` while an"
        " attempt is being made.",
        responses={
            404: {"description": "No such message for this tenant"},
            409: {"description": "The endpoint is disabled, or an attempt is in flight"},
        },
    )
    async def replay_message(message_id: MessageId, tenant_id: TenantId) -> MessageOut:
        row = await repo.get_message(deps.pool, tenant_id, message_id) if _MESSAGE.fullmatch(message_id) else None
        if row is None:
            raise Problem.not_found("message_id", f"No webhook message {message_id!r} for this tenant.")
        async with deps.pool.acquire() as conn, conn.transaction():
            endpoint = await repo.get_endpoint(conn, tenant_id, row["endpoint_id"])
            if endpoint is not None and not endpoint["enabled"]:
                raise Problem.invalid(
                    "endpoint_id",
                    f"the endpoint {row['endpoint_id']} is disabled ({endpoint['disabled_reason']}); re-enable it"
                    " with PATCH enabled=true first",
                    "endpoint_disabled",
                    status=409,
                )
            replayed = await repo.replay(conn, tenant_id, message_id)
        if replayed is None:
            raise Problem.invalid(
                "message_id", "an attempt is in flight; try again when it has ended", "attempt_in_flight", status=409
            )
        return _message_out(replayed)
