"""HTTP plumbing for the FastAPI services: RFC 9457 problems, API-key auth, traces, health.

Every error a caller can fix is `application/problem+json` naming the field; nothing a caller
sends makes a service answer 500 (unexpected errors are logged with context and answered as a
problem with a correlation id).
"""

import hashlib
import secrets
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind
from starlette.exceptions import HTTPException as StarletteHTTPException

from dunning.logging import bind_context, clear_context, get_logger
from dunning.tracing import context_from_traceparent, current_traceparent, tracer

log = get_logger(__name__)
PROBLEM = "application/problem+json"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


# FastAPI's own telemetry would add a second server span, operation spans and metrics (about four
# spans a request) on top of TracingMiddleware's: pass `telemetry=NO_FASTAPI_TELEMETRY` to FastAPI().
NO_FASTAPI_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


class Problem(Exception):
    """Raise from a route: becomes an RFC 9457 problem document."""

    def __init__(self, status: int, detail: str, *, type_: str = "about:blank", title: str | None = None,
                 errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title or _TITLES.get(status, "Error")
        self.errors = errors
        self.headers = headers


def problem_body(status: int, detail: str, *, type_: str = "about:blank", title: str | None = None,
                 errors: list[dict[str, Any]] | None = None, instance: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title or _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def problem_response(status: int, detail: str, **kwargs) -> JSONResponse:
    headers = kwargs.pop("headers", None)
    return JSONResponse(problem_body(status, detail, **kwargs), status_code=status, media_type=PROBLEM, headers=headers)


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        errors.append({"field": ".".join(loc) or "(body)", "message": err.get("msg", "invalid"), "code": err.get("type")})
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc.status, exc.detail, type_=exc.type, title=exc.title, errors=exc.errors,
                                instance=request.url.path, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = field_errors(exc)
        if any(e["code"] == "json_invalid" for e in errors):
            return problem_response(400, "The body is not valid JSON.", errors=errors, instance=request.url.path)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(422, detail, errors=errors, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem_response(exc.status_code, str(exc.detail), instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("http.unhandled", path=request.url.path)
        status = 503 if isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)) else 500
        return problem_response(status, "The request could not be completed; it is safe to retry.",
                                instance=request.url.path)


class TracingMiddleware:
    """A server span per request, continuing the caller's `traceparent`; the trace id is bound to
    the request's log lines and returned in a `traceparent` response header. Plain ASGI (Starlette's
    BaseHTTPMiddleware costs a task and a queue per request)."""

    def __init__(self, app, service: str):
        self.app = app
        self.tracer = tracer(service)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                incoming = value.decode("latin-1")
                break
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}",
                                               context=context_from_traceparent(incoming),
                                               kind=SpanKind.SERVER) as span:
            traceparent = current_traceparent()
            bind_context(trace_id=traceparent.split("-")[1] if traceparent else None)

            async def send_with_trace(message):
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if traceparent:
                        message.setdefault("headers", [])
                        message["headers"] = [*message["headers"], (b"traceparent", traceparent.encode())]
                await send(message)

            try:
                await self.app(scope, receive, send_with_trace)
            finally:
                clear_context("trace_id", "tenant_id", "invoice_id")


def install_tracing(app: FastAPI, service: str) -> None:
    app.add_middleware(TracingMiddleware, service=service)


# --- API keys ---------------------------------------------------------------------------------

def new_api_key() -> str:
    return "dk_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    # The key is 256 random bits, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).digest()


async def tenant_for_key(pool: asyncpg.Pool, authorization: str | None) -> str:
    """Resolve `Authorization: Bearer <key>` to a tenant id, or raise a 401 problem."""
    challenge = {"WWW-Authenticate": 'Bearer realm="dunning"'}
    if not authorization:
        raise Problem(401, "Missing Authorization header: send 'Authorization: Bearer <api key>'.", headers=challenge)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Authorization must be 'Bearer <api key>'.", headers=challenge)
    tenant_id = await pool.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_api_key(token.strip())
    )
    if tenant_id is None:
        raise Problem(401, "Unknown or revoked API key.", headers=challenge)
    bind_context(tenant_id=tenant_id)
    return tenant_id


def install_health(app: FastAPI, pool_getter) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        pool = pool_getter()
        try:
            await pool.fetchval("SELECT 1")
        except Exception:  # noqa: BLE001
            return problem_response(503, "database unreachable")
        return {"status": "ready"}
