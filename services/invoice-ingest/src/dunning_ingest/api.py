"""The HTTP API of invoice-ingest: accounting systems push and change invoices, people read their
dunning story.

POST  /v1/invoices                  create one invoice (idempotent on external_id and on Idempotency-Key)
POST  /v1/invoices/bulk             create (or, "mode": "upsert", create or update) up to 10,000
                                    invoices; one result per item, one bad item never rejects the others
GET   /v1/invoices/{id}             the invoice with its payments, credit notes, money, timeline and history
PATCH /v1/invoices/{id}             change an open invoice (JSON merge patch; If-Match)
POST  /v1/invoices/{id}/void        void an open invoice (If-Match)
POST  /v1/invoices/{id}/write-off   write off an open invoice's balance (If-Match)
GET   /v1/invoices                  filter by status, customer, due date; `limit` + `cursor`, newest first

PATCH, void and write-off are registered from invoice_changes_api (`invoice_change_routes`).

Every invoice answer carries `ETag: "<version>"`.
"""

import json
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from dunning.http import (
    JSON_BODY,
    ApiKeyAuth,
    Cursor,
    Problem,
    TenantId,
    decode_cursor,
    json_body,
    limit_query,
    page,
    service_app,
)
from dunning.http.preconditions import etag
from dunning_ingest import repository
from dunning_ingest.bulk import gc_paused
from dunning_ingest.customers_api import customer_routes
from dunning_ingest.disputes_api import dispute_routes
from dunning_ingest.holds_api import hold_routes
from dunning_ingest.idempotency import MAX_KEY_LENGTH, checked_key
from dunning_ingest.invoice_changes_api import ETAG, invoice_change_routes, invoice_id_of, reply_response
from dunning_ingest.invoice_input import CloseIn, InvoiceIn, InvoicePatch
from dunning_ingest.invoice_output import INVOICE_ID, InvoiceDetail, InvoiceStatus, invoice_out_json
from dunning_ingest.plans_api import plan_routes
from dunning_ingest.promises_api import promise_routes
from dunning_ingest.schemas import BulkResponse, InvoiceList, canonical_fingerprint
from dunning_ingest.service import InvoiceService
from dunning_ingest.settings import Settings
from dunning_ingest.validation import decode_invoice

BULK_PATH = "/v1/invoices/bulk"
TAGS = [{"name": "invoices", "description": "Invoices pushed by the accounting system, and their dunning story."}]


@dataclass
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    invoices: InvoiceService
    auth: ApiKeyAuth


_IDEMPOTENCY_DOC = (
    "Optional. Replays the first response (with `Idempotent-Replayed: true`) for 24 h; reusing "
    "a key with a different body is a 422, while the first request runs a 409. At most 255 chars."
)


BULK_MODES = ("create", "upsert")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(deps: Deps) -> FastAPI:
    settings = deps.settings
    app = service_app(
        distribution="dunning-invoice-ingest",
        settings=settings,
        pool=deps.pool,
        tags=TAGS,
        description="Accounting systems push invoices; the dunning timeline of each invoice reads back.",
        max_body_bytes=settings.bulk_max_bytes,
        own_string_checks={BULK_PATH: "invoices"},
        auth=deps.auth,
    )
    IdempotencyKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description=_IDEMPOTENCY_DOC,
            json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "\\S"},  # as checked_key checks
        ),
    ]

    async def create_invoice_of(request: Request, tenant_id: str) -> Response:
        # The body is decoded and checked here rather than by FastAPI (same errors): see validation.py.
        raw = await request.body()
        invoice = decode_invoice(raw, request.headers.get("content-type"))
        key = checked_key(request.headers.get("idempotency-key"))
        path = request.scope["path"]  # the route's path: request.url.path without building the URL
        fingerprint = None
        if key is not None:
            try:
                body: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:  # JSON that only the stdlib parser takes (NaN...): hash as sent
                body = raw.decode(errors="replace")
            fingerprint = canonical_fingerprint("POST", path, body)
        return reply_response(
            await deps.invoices.create(tenant_id, invoice, path=path, key=key, fingerprint=fingerprint)
        )

    async def create_invoice_lean(request: Request) -> Response:
        return await create_invoice_of(request, await deps.auth.tenant(request.headers.get("authorization")))

    # The hot route: served by a plain Starlette route (matched first), which skips FastAPI's dependency
    # solving (a fifth of the request's CPU); the APIRoute below documents it (and would serve it the same).
    app.router.add_route("/v1/invoices", create_invoice_lean, methods=["POST"], include_in_schema=False)

    @app.post(
        "/v1/invoices",
        status_code=201,
        response_class=Response,
        tags=["invoices"],
        operation_id="createInvoice",
        summary="Create one invoice",
        responses={
            201: {"model": InvoiceDetail, "description": "Created", "headers": ETAG},
            200: {"model": InvoiceDetail, "description": "Already exists with the same content", "headers": ETAG},
            409: {
                "description": "The external_id exists with other content: change it with PATCH or the bulk "
                "upsert mode (or the Idempotency-Key's first request is still running)"
            },
        },
        openapi_extra=json_body("InvoiceIn"),
    )
    async def create_invoice(request: Request, tenant_id: TenantId, idempotency_key: IdempotencyKey = None) -> Response:
        return await create_invoice_of(request, tenant_id)

    @app.post(
        BULK_PATH,
        response_class=Response,
        tags=["invoices"],
        operation_id="createInvoices",
        summary="Create (or upsert) up to 10,000 invoices; one result per item",
        description='`"mode": "create"` (the default): an existing external_id is `existing` with the same '
        'content, `conflict` with other content. `"mode": "upsert"` (a nightly sync): an existing external_id '
        "with changed content is `updated` (an open invoice; as PATCH would change it), unchanged content "
        "`existing`; a closed invoice with changed content, or a changed currency or issue_date, is `conflict`.",
        responses={
            200: {"model": BulkResponse, "description": "One result per item"},
            409: {"description": "The Idempotency-Key's first request is still running"},
        },
        openapi_extra=json_body(
            {
                "type": "object",
                "required": ["invoices"],
                "additionalProperties": False,
                "properties": {
                    "mode": {"type": "string", "enum": list(BULK_MODES), "default": "create"},
                    "invoices": {
                        "type": "array",
                        "maxItems": settings.bulk_max_items,
                        "items": {"$ref": "#/components/schemas/InvoiceIn"},
                    },
                },
            }
        ),
    )
    async def create_invoices(
        request: Request, tenant_id: TenantId, idempotency_key: IdempotencyKey = None
    ) -> Response:
        limit = settings.bulk_max_items
        with gc_paused():
            body = request.scope.get(JSON_BODY)  # the edge guard parsed it already (it checks the depth)
            if body is None:
                raw = await request.body()
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    try:  # what only the stdlib parser takes (a lone surrogate in one item, NaN...)
                        body = json.loads(raw)
                    except (ValueError, UnicodeDecodeError):
                        raise Problem(
                            400,
                            "The body is not valid JSON.",
                            errors=[{"field": "(body)", "message": str(exc), "code": "json_invalid"}],
                        ) from None
            if not isinstance(body, dict) or not isinstance(body.get("invoices"), list):
                raise Problem.invalid("invoices", "must be a list of invoices", "list_type")
            if extra := sorted(set(body) - {"invoices", "mode"}):
                raise Problem(
                    422,
                    f"{extra[0]}: unknown field",
                    errors=[{"field": f, "message": "unknown field", "code": "extra_forbidden"} for f in extra],
                )
            if len(body["invoices"]) > limit:
                raise Problem.invalid(
                    "invoices", f"at most {limit} per request, got {len(body['invoices'])}", "too_long"
                )
            mode = body.get("mode", "create")
            if mode not in BULK_MODES:
                raise Problem.invalid("mode", "must be create or upsert", "enum")
            key = checked_key(request.headers.get("idempotency-key"))
            fingerprint = canonical_fingerprint("POST", request.scope["path"], body) if key is not None else None
            return reply_response(
                await deps.invoices.create_many(
                    tenant_id, body["invoices"], upsert=mode == "upsert", key=key, fingerprint=fingerprint
                )
            )

    @app.get(
        "/v1/invoices/{invoice_id}",
        response_class=Response,
        tags=["invoices"],
        operation_id="getInvoice",
        summary="An invoice with its payments, credit notes, money, dunning timeline and history",
        responses={
            200: {"model": InvoiceDetail, "headers": ETAG},
            404: {"description": "No such invoice for this tenant"},
        },
    )
    async def get_invoice(invoice_id: str, tenant_id: TenantId) -> Response:
        body = await deps.invoices.read_detail(tenant_id, invoice_id_of(invoice_id))
        if body is None:
            raise Problem.not_found("invoice_id", f"No invoice {invoice_id}.")
        return _json(body, headers={"etag": etag(body["version"])})

    invoice_change_routes(app, deps)

    @app.get(
        "/v1/invoices",
        response_class=Response,
        tags=["invoices"],
        operation_id="listInvoices",
        summary="The tenant's invoices, newest first",
        responses={200: {"model": InvoiceList}},
    )
    async def list_invoices(
        tenant_id: TenantId,
        status: InvoiceStatus | None = None,
        customer: Annotated[str | None, Query(max_length=200, description="Customer external id")] = None,
        due_before: Annotated[date | None, Query(description="Due strictly before this date")] = None,
        due_after: Annotated[date | None, Query(description="Due strictly after this date")] = None,
        limit: Annotated[int, limit_query(50, 200)] = 50,
        cursor: Cursor = None,
    ) -> Response:
        after_id = decode_cursor(cursor, INVOICE_ID)
        async with deps.pool.acquire() as conn:
            rows = await repository.list_invoices(
                conn,
                tenant_id,
                status=status,
                customer=customer,
                due_before=due_before,
                due_after=due_after,
                after_id=after_id,
                limit=limit + 1,
            )
        return _json(page(rows, limit, key=lambda r: r["id"], view=invoice_out_json))

    customer_routes(app, deps)
    plan_routes(app, deps)
    hold_routes(app, deps)  # holds, disputes, promises (issue 9)
    dispute_routes(app, deps)
    promise_routes(app, deps)
    _document_bodies(app, {"InvoiceIn": InvoiceIn, "InvoicePatch": InvoicePatch, "CloseIn": CloseIn})
    return app


def _document_bodies(app: FastAPI, models: dict[str, type]) -> None:
    """POST /v1/invoices, PATCH, void and write-off read their bodies themselves: put their models in
    the OpenAPI components by hand."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, cls in models.items():
                model = TypeAdapter(cls).json_schema(ref_template="#/components/schemas/{model}")
                components.update(model.pop("$defs", {}))
                components[name] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
