"""The HTTP API of invoice-ingest: accounting systems push invoices, people read their dunning story.

POST /v1/invoices            create one invoice (idempotent on external_id and on Idempotency-Key)
POST /v1/invoices/bulk       create up to 10,000 invoices; one result per item, one bad item never
                             rejects the others
GET  /v1/invoices/{id}       the invoice with its payments and dunning timeline
GET  /v1/invoices            filter by status, customer, due date; cursor pagination, newest first
"""

import json
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from pydantic import TypeAdapter

from dunning.http import NO_FASTAPI_TELEMETRY, PROBLEM, Problem, install_health, install_problem_handlers, install_tracing

from dunning_ingest import repository
from dunning_ingest.auth import Authenticator
from dunning_ingest.bulk import gc_paused
from dunning_ingest.idempotency import key_from
from dunning_ingest.representation import INVOICE_ID, decode_cursor, encode_cursor, invoice_json
from dunning_ingest.schemas import BulkResponse, InvoiceDetail, InvoiceIn, InvoiceList, canonical_fingerprint, storable
from dunning_ingest.service import InvoiceService
from dunning_ingest.settings import Settings
from dunning_ingest.validation import decode_invoice


@dataclass
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    invoices: InvoiceService
    auth: Authenticator


_PROBLEM_DOC = {"content": {PROBLEM: {"schema": {"type": "object"}}}}
_IDEMPOTENCY_DOC = ("Optional. Replays the first response (with `Idempotent-Replayed: true`) for 24 h; reusing "
                    "a key with a different body is a 422, while the first request runs a 409. At most 255 chars.")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(deps: Deps) -> FastAPI:
    app = FastAPI(title="invoice-ingest", version="1.0.0",
                  description="Accounting systems push invoices; the dunning timeline of each invoice reads back.",
                  telemetry=NO_FASTAPI_TELEMETRY)
    install_problem_handlers(app)
    install_tracing(app, deps.settings.service_name)
    install_health(app, lambda: deps.pool)
    bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer dk_...`")

    async def tenant(request: Request, _: Any = Depends(bearer)) -> str:
        return await deps.auth.tenant(request.headers.get("authorization"))

    Tenant = Annotated[str, Depends(tenant)]
    IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description=_IDEMPOTENCY_DOC)]
    problems = {code: _PROBLEM_DOC for code in (400, 401, 404, 409, 422)}

    async def create_invoice_of(request: Request, tenant_id: str) -> Response:
        # The body is decoded and checked here rather than by FastAPI (same errors): see validation.py.
        raw = await request.body()
        invoice = decode_invoice(raw, request.headers.get("content-type"))
        key = key_from(request)
        path = request.scope["path"]  # the route's path: request.url.path without building the URL
        fingerprint = None
        if key is not None:
            try:
                body: Any = orjson.loads(raw)
            except orjson.JSONDecodeError:  # JSON that only the stdlib parser takes (NaN...): hash as sent
                body = raw.decode(errors="replace")
            fingerprint = canonical_fingerprint("POST", path, body)
        return await deps.invoices.create(tenant_id, invoice, path=path, key=key, fingerprint=fingerprint)

    async def create_invoice_lean(request: Request) -> Response:
        return await create_invoice_of(request, await deps.auth.tenant(request.headers.get("authorization")))

    # The hot route: served by a plain Starlette route (matched first), which skips FastAPI's dependency
    # solving (a fifth of the request's CPU); the APIRoute below documents it (and would serve it the same).
    app.router.add_route("/v1/invoices", create_invoice_lean, methods=["POST"], include_in_schema=False)

    @app.post("/v1/invoices", status_code=201, response_class=Response, tags=["invoices"],
              responses={**problems, 201: {"model": InvoiceDetail, "description": "Created"},
                         200: {"model": InvoiceDetail, "description": "Already exists with the same content"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "$ref": "#/components/schemas/InvoiceIn"}}}}})
    async def create_invoice(request: Request, tenant_id: Tenant, idempotency_key: IdempotencyKey = None) -> Response:
        return await create_invoice_of(request, tenant_id)

    @app.post("/v1/invoices/bulk", response_class=Response, tags=["invoices"],
              responses={**problems, 200: {"model": BulkResponse, "description": "One result per item"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "required": ["invoices"], "additionalProperties": False,
                  "properties": {"invoices": {"type": "array", "maxItems": deps.settings.bulk_max_items,
                                              "items": {"$ref": "#/components/schemas/InvoiceIn"}}}}}}}})
    async def create_invoices(request: Request, tenant_id: Tenant,
                              idempotency_key: IdempotencyKey = None) -> Response:
        limit = deps.settings.bulk_max_items
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > deps.settings.bulk_max_bytes:
            raise Problem(413, f"The body is larger than {deps.settings.bulk_max_bytes} bytes; split the import.")
        raw = await request.body()
        if len(raw) > deps.settings.bulk_max_bytes:
            raise Problem(413, f"The body is larger than {deps.settings.bulk_max_bytes} bytes; split the import.")
        with gc_paused():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                try:  # what only the stdlib parser takes (a lone surrogate in one item, NaN...)
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise Problem(400, "The body is not valid JSON.",
                                  errors=[{"field": "(body)", "message": str(exc)}]) from None
            if not isinstance(body, dict) or not isinstance(body.get("invoices"), list):
                raise Problem(422, "invoices: must be a list of invoices",
                              errors=[{"field": "invoices", "message": "must be a list of invoices"}])
            if extra := sorted(set(body) - {"invoices"}):
                raise Problem(422, f"{extra[0]}: unknown field",
                              errors=[{"field": f, "message": "unknown field"} for f in extra])
            if len(body["invoices"]) > limit:
                raise Problem(422, f"invoices: at most {limit} per request, got {len(body['invoices'])}",
                              errors=[{"field": "invoices", "message": f"at most {limit} per request"}])
            key = key_from(request)
            fingerprint = canonical_fingerprint("POST", request.url.path, body) if key is not None else None
            return await deps.invoices.create_many(tenant_id, body["invoices"], key=key, fingerprint=fingerprint)

    @app.get("/v1/invoices/{invoice_id}", response_class=Response, tags=["invoices"],
             responses={**problems, 200: {"model": InvoiceDetail}})
    async def get_invoice(invoice_id: str, tenant_id: Tenant) -> Response:
        if not INVOICE_ID.fullmatch(invoice_id):
            raise Problem(404, f"No invoice {invoice_id!r}.", errors=[{"field": "id", "message": "not found"}])
        async with deps.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            body = await deps.invoices.detail(conn, tenant_id, invoice_id)
        if body is None:
            raise Problem(404, f"No invoice {invoice_id}.", errors=[{"field": "id", "message": "not found"}])
        return _json(body)

    @app.get("/v1/invoices", response_class=Response, tags=["invoices"],
             responses={**problems, 200: {"model": InvoiceList}})
    async def list_invoices(
        tenant_id: Tenant,
        status: Literal["open", "paid", "void"] | None = None,
        customer: Annotated[str | None, Query(max_length=200, description="Customer external id")] = None,
        due_before: Annotated[date | None, Query(description="Due strictly before this date")] = None,
        due_after: Annotated[date | None, Query(description="Due strictly after this date")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
    ) -> Response:
        if customer is not None and not storable(customer):
            raise Problem(422, "customer: must be text without NUL characters",
                          errors=[{"field": "customer", "message": "must be text without NUL characters"}])
        after_id = decode_cursor(cursor) if cursor is not None else None
        async with deps.pool.acquire() as conn:
            rows = await repository.list_invoices(conn, tenant_id, status=status, customer=customer,
                                                  due_before=due_before, due_after=due_after, after_id=after_id,
                                                  limit=limit + 1)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
        return _json({"data": [invoice_json(r) for r in page], "next_cursor": next_cursor})

    _document_invoice_in(app)
    return app


def _document_invoice_in(app: FastAPI) -> None:
    """POST /v1/invoices reads its body itself, so put its model in the OpenAPI components by hand."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            model = TypeAdapter(InvoiceIn).json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(model.pop("$defs", {}))
            components["InvoiceIn"] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
