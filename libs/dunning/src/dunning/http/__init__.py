"""HTTP plumbing shared by the four services: one app factory, one API-key dependency, one problem shape.

- `app.service_app`: the app factory (title and version, edge guard, tracing, problems, health, metrics);
  `app.json_body`: the OpenAPI request body of a route that reads its JSON body itself.
- `auth.TenantId`: `tenant_id: TenantId` in a route: `Authorization: Bearer <key>` -> tenant id, through
  the app's `ApiKeyAuth` (cached a few seconds).
- `problems`: `Problem` to raise, the `ProblemDetail` model documenting every error response.
- `guard.InputGuard`: NUL, lone surrogates, deep JSON and oversized bodies refused at the edge.
- `tracing.TracingMiddleware`: a span per request named from the route template; 500s answered inside it.
- `pagination`: `limit` + opaque `cursor` in, `{"data": [...], "next_cursor": ...}` out.
"""

from dunning.http.app import NO_FASTAPI_TELEMETRY, api_key_auth, json_body, service_app
from dunning.http.auth import ApiKeyAuth, TenantId, current_tenant
from dunning.http.guard import JSON_BODY, InputGuard, bad_text
from dunning.http.pagination import Cursor, Page, decode_cursor, encode_cursor, limit_query, page
from dunning.http.problems import PROBLEM, PROBLEMS, FieldError, Problem, ProblemDetail, problem_body, problem_response
from dunning.http.tracing import TracingMiddleware, route_template

__all__ = [
    "JSON_BODY",
    "NO_FASTAPI_TELEMETRY",
    "PROBLEM",
    "PROBLEMS",
    "ApiKeyAuth",
    "Cursor",
    "FieldError",
    "InputGuard",
    "Page",
    "Problem",
    "ProblemDetail",
    "TenantId",
    "TracingMiddleware",
    "api_key_auth",
    "bad_text",
    "current_tenant",
    "decode_cursor",
    "encode_cursor",
    "json_body",
    "limit_query",
    "page",
    "problem_body",
    "problem_response",
    "route_template",
    "service_app",
]
