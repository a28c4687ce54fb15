"""The one app factory of the four services: the same title and version rule, edge guard, tracing,
problem handlers, health, metrics and OpenAPI conventions everywhere.

Each service's `api.create_app` calls `service_app(...)` and adds its routes, each with explicit
`operation_id` and `tags`; protected routes take `tenant_id: TenantId` (the app's cached ApiKeyAuth;
the bearer scheme is then declared on them). Every error response of every operation is documented here, once, as RFC
9457 `application/problem+json` with the shared `Problem` schema.
"""

import importlib.metadata
from typing import Any

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from dunning.http.auth import ApiKeyAuth
from dunning.http.guard import InputGuard
from dunning.http.problems import PROBLEM, FieldError, ProblemDetail, install_problem_handlers, problem_response
from dunning.http.tracing import TracingMiddleware
from dunning.settings import CommonSettings

# FastAPI's own telemetry would add a second server span, operation spans and metrics (about four
# spans a request) on top of TracingMiddleware's.
NO_FASTAPI_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_ERRORS = {
    400: "The request cannot be read (not JSON, not UTF-8, nested too deeply, an invalid cursor...)",
    401: "Missing, unknown or revoked API key",
    413: "The body is too large",
    422: "A field is invalid; `errors` names it",
    500: "An error on our side; quote `error_id` when reporting it (a retry will not help)",
    503: "A backing service is unavailable; retry later",
}
_METHODS = ("get", "put", "post", "delete", "patch")


def api_key_auth(settings: CommonSettings, pool: asyncpg.Pool) -> ApiKeyAuth:
    return ApiKeyAuth(pool, settings.auth_cache_seconds)


def json_body(schema: str | dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra=json_body(...)` on a route that reads its JSON body itself: documents that body,
    required, by its schema (a dict) or by the name of a component schema (`"InvoiceIn"`)."""
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def service_app(
    *,
    distribution: str,
    settings: CommonSettings,
    pool: asyncpg.Pool,
    description: str,
    tags: list[dict[str, str]],
    max_body_bytes: int | None = None,
    own_string_checks: dict[str, str] | None = None,
    body_limits: dict[str, int] | None = None,
    auth: ApiKeyAuth | None = None,
) -> FastAPI:
    """A FastAPI app titled with the service's distribution name, at its installed version. `auth`:
    the API-key dependency's cache (one per app; made from the settings if not given)."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        version = "0.0.0"
    app = FastAPI(
        title=distribution, version=version, description=description, openapi_tags=tags, telemetry=NO_FASTAPI_TELEMETRY
    )
    app.state.auth = auth or api_key_auth(settings, pool)
    install_problem_handlers(app)
    app.add_middleware(
        InputGuard,
        max_body_bytes=max_body_bytes or settings.http_max_body_bytes,
        own_string_checks=own_string_checks,
        body_limits=body_limits,
    )
    app.add_middleware(TracingMiddleware, service=settings.service_name)
    _install_health(app, pool)
    _document_problems(app)
    from dunning.metrics import instrument_app  # imported late: dunning.metrics imports dunning.http

    instrument_app(app, settings.service_name)
    return app


def _install_health(app: FastAPI, pool: asyncpg.Pool) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Any:
        try:
            await pool.fetchval("SELECT 1")
        except Exception:
            return problem_response(503, "database unreachable")
        return JSONResponse({"status": "ready"})


def _document_problems(app: FastAPI) -> None:
    """Post-process the generated OpenAPI: every error response is a problem document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (FieldError, ProblemDetail):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                doc.pop("$defs", None)
                components[doc.get("title", model.__name__)] = doc
            for path_item in schema.get("paths", {}).values():
                for method in _METHODS:
                    if (operation := path_item.get(method)) is not None:
                        _problem_responses(operation)
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_responses(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    codes = {400, 422, 500, 503}
    if operation.get("security"):
        codes.add(401)
    if "requestBody" in operation:
        codes.add(413)
    codes.update(int(code) for code in responses if code.isdigit() and int(code) >= 400)
    for code in sorted(codes):
        existing = responses.get(str(code), {})
        description = existing.get("description")
        if not description or description == "Validation Error":
            description = _ERRORS.get(code, "A problem document")
        responses[str(code)] = {"description": description, "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
