"""The change routes of invoice-ingest (registered by api.create_app through `invoice_change_routes`),
and the pieces api.py shares with them (the ETag header, the invoice id check, the answer of a Reply):

PATCH /v1/invoices/{id}             change an open invoice (JSON merge patch; If-Match)
POST  /v1/invoices/{id}/void        void an open invoice (If-Match)
POST  /v1/invoices/{id}/write-off   write off an open invoice's balance (If-Match)
"""

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from dunning.http import Problem, TenantId, json_body
from dunning.http.preconditions import if_match_header
from dunning_ingest.idempotency import Reply, checked_key
from dunning_ingest.invoice_input import close_adapter, patch_adapter
from dunning_ingest.invoice_output import INVOICE_ID, InvoiceDetail
from dunning_ingest.schemas import canonical_fingerprint
from dunning_ingest.stops_api import IdempotencyKey
from dunning_ingest.validation import decode_model

if TYPE_CHECKING:
    from dunning_ingest.api import Deps

ETAG = {"ETag": {"description": 'The invoice\'s version as a strong entity tag: `"3"`.', "schema": {"type": "string"}}}
_MERGE_PATCH = "application/merge-patch+json"
IfMatch = Annotated[str | None, if_match_header("invoice")]


def invoice_id_of(invoice_id: str) -> str:
    if not INVOICE_ID.fullmatch(invoice_id):
        raise Problem.not_found("invoice_id", f"No invoice {invoice_id!r}.")
    return invoice_id


def reply_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def invoice_change_routes(app: FastAPI, deps: "Deps") -> None:
    """Register PATCH, void and write-off of an invoice on the app, served by deps.invoices."""
    _CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
        200: {"model": InvoiceDetail, "description": "The invoice after the change", "headers": ETAG},
        404: {"description": "No such invoice for this tenant"},
        409: {
            "description": "The invoice is closed (`invoice_closed`: paid, void or written off), or the "
            "Idempotency-Key's first request is still running"
        },
        412: {"description": "If-Match names another version than the invoice's (`stale_version`)"},
    }

    @app.patch(
        "/v1/invoices/{invoice_id}",
        response_class=Response,
        tags=["invoices"],
        operation_id="updateInvoice",
        summary="Change an open invoice (JSON merge patch)",
        description="amount_due, due_date, payment_url (null clears it), metadata (replaces the map), number "
        "and customer_external_id (another existing customer of the tenant). A field left out stays; currency "
        "and issue_date never change (422 naming them). A change makes a new version and an InvoiceUpdated; "
        "a patch that changes nothing answers the invoice as it is. An amount correction moves the balance by "
        "the difference. `If-Match` guards against lost updates; without it the last write wins.",
        responses=_CHANGE_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    media: {"schema": {"$ref": "#/components/schemas/InvoicePatch"}}
                    for media in ("application/json", _MERGE_PATCH)
                },
            }
        },
    )
    async def update_invoice(
        invoice_id: str,
        request: Request,
        tenant_id: TenantId,
        if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        invoice_id = invoice_id_of(invoice_id)
        raw = await request.body()
        patch = decode_model(raw, request.headers.get("content-type"), patch_adapter)
        if not patch.model_fields_set:
            raise Problem.invalid("(body)", "an empty patch changes nothing: name a field to change", "empty_patch")
        key = checked_key(idempotency_key)
        fingerprint = canonical_fingerprint("PATCH", request.scope["path"], orjson.loads(raw)) if key else None
        reply = await deps.invoices.patch(
            tenant_id, invoice_id, patch, if_match=if_match, key=key, fingerprint=fingerprint
        )
        return reply_response(reply)

    def close_route(path: str, status: str, operation_id: str, summary: str, description: str) -> None:
        @app.post(
            f"/v1/invoices/{{invoice_id}}/{path}",
            response_class=Response,
            tags=["invoices"],
            operation_id=operation_id,
            summary=summary,
            description=description,
            responses=_CHANGE_RESPONSES,
            openapi_extra=json_body("CloseIn"),
        )
        async def close_invoice(
            invoice_id: str,
            request: Request,
            tenant_id: TenantId,
            if_match: IfMatch = None,
            idempotency_key: IdempotencyKey = None,
        ) -> Response:
            invoice_id = invoice_id_of(invoice_id)  # before the body: an id that cannot be is a 404 whatever the body
            body = decode_model(await request.body(), request.headers.get("content-type"), close_adapter)
            key = checked_key(idempotency_key)
            fingerprint = canonical_fingerprint("POST", request.scope["path"], body.model_dump()) if key else None
            reply = await deps.invoices.close(
                tenant_id,
                invoice_id,
                status,
                body.reason,
                if_match=if_match,
                key=key,
                fingerprint=fingerprint,
            )
            return reply_response(reply)

    close_route(
        "void",
        "void",
        "voidInvoice",
        "Void an open invoice",
        "Nothing is owed any more: status `void`, pending reminders are cancelled (InvoiceVoided). The same "
        "request again answers 200 with the invoice as it is; any other change to a closed invoice is a 409.",
    )
    close_route(
        "write-off",
        "written_off",
        "writeOffInvoice",
        "Write off an open invoice's balance",
        "The balance is uncollectable: status `written_off`, the balance recorded as `written_off_amount`, "
        "pending reminders cancelled (InvoiceWrittenOff). The same request again answers 200 with the invoice "
        "as it is; any other change to a closed invoice is a 409.",
    )
