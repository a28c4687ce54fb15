"""Bank statement routes (API key):

- `POST /v1/statements`                       import a CAMT.053 or MT940 file (raw body or multipart `file`)
- `GET  /v1/statements`                       the tenant's statements (paged)
- `GET  /v1/statements/{statement_id}`        one statement's summary
- `GET  /v1/statements/{statement_id}/lines`  its lines and what became of each (paged)
"""

import re
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse

from dunning.http import Cursor, Page, Problem, TenantId, decode_cursor, limit_query, page
from dunning_reconciliation import statements_import
from dunning_reconciliation.repository import statements as statement_repo
from dunning_reconciliation.statements import StatementError
from dunning_reconciliation.statements_schemas import (
    StatementFormat,
    StatementImportOut,
    StatementLineOut,
    StatementOut,
)
from dunning_reconciliation.statements_view import line_view, statement_view

TAG = {"name": "statements", "description": "Bank statements (CAMT.053, MT940): each credit line becomes a payment."}
_STATEMENT_ID = re.compile(r"^stm_[0-9A-Za-z]{10,40}$")
_POSITION = re.compile(r"^[0-9]{1,9}$")
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/xml": {"schema": {"type": "string", "description": "A CAMT.053 document"}},
            "text/plain": {"schema": {"type": "string", "description": "An MT940 file (or give `format`)"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


async def _upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The file's bytes and name: a multipart form's `file`, or the raw body."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5, max_part_size=limit)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise Problem.invalid("file", "a multipart upload needs its file in the field `file`", "required")
        return await upload.read(), upload.filename
    return await request.body(), None


def register(app: FastAPI, deps: Any) -> None:
    if not any(t["name"] == TAG["name"] for t in app.openapi_tags or []):
        app.openapi_tags = [*(app.openapi_tags or []), TAG]
    limit = deps.settings.statement_max_body_bytes

    @app.post(
        "/v1/statements",
        status_code=201,
        response_model=StatementImportOut,
        tags=["statements"],
        operation_id="importStatement",
        summary="Import a bank statement file (CAMT.053 or MT940): each credit line is matched or queued",
        responses={
            200: {"model": StatementImportOut, "description": "Imported before: the first answer, `duplicate: true`"},
            413: {"description": "Larger than the statement size limit"},
            422: {"description": "The file cannot be read whole: the element or line at fault is named"},
        },
        openapi_extra=_BODY,
    )
    async def import_statement(
        request: Request,
        tenant_id: TenantId,
        format: Annotated[StatementFormat | None, Query(description="Detected from the content if absent")] = None,
        filename: Annotated[str, Query(max_length=255, description="The file's name, for people")] = "",
    ) -> JSONResponse:
        data, uploaded_name = await _upload(request, limit)
        if len(data) > limit:
            raise Problem.invalid("(body)", f"larger than {limit} bytes", "too_large", status=413)
        try:
            result = await statements_import.import_statement(
                deps.pool, tenant_id, data, filename=filename or uploaded_name, format=format
            )
        except StatementError as exc:
            raise Problem.invalid(exc.field, exc.message, "invalid_statement") from None
        return JSONResponse(result, status_code=200 if result["duplicate"] else 201)

    @app.get(
        "/v1/statements",
        response_model=Page[StatementOut],
        tags=["statements"],
        operation_id="listStatements",
        summary="List the tenant's imported statements (oldest first)",
    )
    async def list_statements(
        tenant_id: TenantId, limit: Annotated[int, limit_query(100, 500)] = 100, cursor: Cursor = None
    ) -> dict[str, Any]:
        after = decode_cursor(cursor, _STATEMENT_ID)
        rows = await statement_repo.list_statements(deps.pool, tenant_id, after=after, limit=limit + 1)
        return page(rows, limit, key=lambda r: r["statement_id"], view=statement_view)

    async def _statement(tenant_id: str, statement_id: str) -> Any:
        row = None
        if _STATEMENT_ID.fullmatch(statement_id):
            row = await statement_repo.get_statement(deps.pool, tenant_id, statement_id)
        if row is None:
            raise Problem.not_found("statement_id", f"No statement {statement_id!r}.")
        return row

    @app.get(
        "/v1/statements/{statement_id}",
        response_model=StatementOut,
        tags=["statements"],
        operation_id="getStatement",
        summary="One statement: its balances and counts",
        responses={404: {"description": "No such statement for this tenant"}},
    )
    async def get_statement(statement_id: Annotated[str, Path(max_length=64)], tenant_id: TenantId) -> dict[str, Any]:
        return statement_view(await _statement(tenant_id, statement_id))

    @app.get(
        "/v1/statements/{statement_id}/lines",
        response_model=Page[StatementLineOut],
        tags=["statements"],
        operation_id="listStatementLines",
        summary="A statement's lines in order, with what became of each",
        responses={404: {"description": "No such statement for this tenant"}},
    )
    async def list_statement_lines(
        statement_id: Annotated[str, Path(max_length=64)],
        tenant_id: TenantId,
        limit: Annotated[int, limit_query(100, 1000)] = 100,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        row = await _statement(tenant_id, statement_id)
        after = int(decode_cursor(cursor, _POSITION) or 0)
        rows = await statement_repo.statement_lines(deps.pool, [row["statement_id"]], after=after, limit=limit + 1)
        return page(rows, limit, key=lambda r: str(r["position"]), view=line_view)
