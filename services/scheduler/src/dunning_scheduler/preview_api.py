"""Route of the preview: what a policy and settings would send, without changing anything (`preview`)."""

from typing import Annotated, Any

import asyncpg
from fastapi import Body, FastAPI

from dunning.http import Problem, TenantId, json_body
from dunning_scheduler.policy_schemas import PREVIEW_EXAMPLE, PreviewOut
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.preview import PreviewError, PreviewRequest, preview
from dunning_scheduler.settings import Settings


def _inlined(schema: dict) -> dict:
    """A JSON schema with its `$defs` written in place (the request body is documented whole)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def add_routes(app: FastAPI, pool: asyncpg.Pool, settings: Settings, policies: ActivePolicies) -> None:
    @app.post(
        "/v1/policy/preview",
        response_model=PreviewOut,
        response_model_by_alias=True,
        tags=["preview"],
        operation_id="previewPolicy",
        openapi_extra=json_body(_inlined(PreviewRequest.model_json_schema())),
        summary="What a policy and settings would send, changing nothing",
        description="For sample invoices and/or open invoices (`invoice_ids`): each stage's time in UTC and in "
        "the customer's zone, why the calendar or the send window moved it (`moved`), why firing would hold it "
        "back (`deferred`: window, contact cap, quiet period), the consolidated notice it would go in, and the "
        "fee and interest it would charge. `policy` tries a document for every invoice, `policy_id` a stored "
        "named policy; neither: the segment rules choose, as for a real invoice. `settings` tries settings "
        "instead of the stored ones. Computed by the same functions planning and firing use (the customer's "
        "real payment history and contacts when `customer_id` names a known customer; a sample without one is "
        "spread over a window's opening by its own key, so give the real customer_id to see the exact minute). "
        "Stores nothing.",
        responses={
            422: {
                "description": "The body, the policy or the settings are not valid, or an invoice id is "
                "unknown (`errors` name the fields, e.g. invoice_ids.0, policy.stages.1.offset)"
            }
        },
    )
    async def preview_route(
        tenant_id: TenantId,
        body: Annotated[Any, Body(openapi_examples={"de_calendar_window": {"value": PREVIEW_EXAMPLE}})],
    ):
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            try:
                return await preview(conn, tenant_id, body, policies)
            except PreviewError as exc:
                raise Problem(422, str(exc), title="Invalid preview", errors=exc.errors) from None
