"""RFC 9457 problem documents: the one error shape of every service, and the one model documenting it.

Raise `Problem` anywhere below a route; the handlers installed by the app factory turn it, FastAPI's
validation errors and Starlette's HTTP errors into `application/problem+json` naming the fields.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM = "application/problem+json"


def allowed_methods(app: Any, scope: Any) -> str:
    """Every method the app's routes take on this path (Starlette names only the first route's)."""
    routes = app.router.routes
    first = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    template = getattr(first, "path", None)  # the template Starlette picked (`/v1/invoices/bulk`, not `{id}`)
    methods: set[str] = set()
    for route in routes:
        if getattr(route, "path", None) == template:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


PROBLEMS = "https://dunning.dev/problems/"  # prefix of the problem `type` URIs this API defines
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FieldError(BaseModel):
    field: str = Field(
        description="Where: a body path (`customer.email`, `invoices.3.amount_due`), a query or "
        "path parameter, or a header name; `(body)` for the body as a whole."
    )
    message: str
    code: str | None = Field(None, description="A stable machine-readable reason, e.g. `string_too_long`.")


class ProblemDetail(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`), the body of every error response."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field("about:blank", description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The request path.")
    errors: list[FieldError] | None = Field(None, description="The fields at fault, when the caller can fix them.")
    error_id: str | None = Field(
        None,
        description="On a 500 or 503: the trace id of the request (or an id of "
        "its own), to quote when reporting it; the logs carry it.",
    )


class Problem(Exception):
    """Raise from a route or the layers below it: becomes an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "about:blank",
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_
        self.title = title or TITLES.get(status, "Error")
        self.errors = errors
        self.headers = headers
        self.extensions = extensions

    @classmethod
    def invalid(cls, field: str, message: str, code: str, status: int = 422, **kwargs: Any) -> "Problem":
        """One field at fault: `field: message`, with the field named in `errors`."""
        return cls(status, f"{field}: {message}", errors=[{"field": field, "message": message, "code": code}], **kwargs)

    @classmethod
    def not_found(cls, field: str, detail: str) -> "Problem":
        """A 404 for what the path names: `detail` says what is missing, `errors` names the field."""
        return cls(404, detail, errors=[{"field": field, "message": "not found", "code": "not_found"}])

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body = problem_body(
            self.status, self.detail, type_=self.type, title=self.title, errors=self.errors, instance=instance
        )
        if self.extensions:
            body.update(self.extensions)
        return body


def problem_body(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return body


def problem_response(status: int, detail: str, **kwargs: Any) -> JSONResponse:
    headers = kwargs.pop("headers", None)
    return JSONResponse(problem_body(status, detail, **kwargs), status_code=status, media_type=PROBLEM, headers=headers)


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        errors.append(
            {"field": ".".join(loc) or "(body)", "message": err.get("msg", "invalid"), "code": err.get("type")}
        )
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    """Problem, validation and HTTP errors as problem documents. Unexpected exceptions are answered by
    the tracing middleware, inside the request's span (see http/tracing.py)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse(
            exc.body(request.scope["path"]), status_code=exc.status, media_type=PROBLEM, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        if any(e["code"] == "json_invalid" for e in errors):
            return problem_response(
                400,
                "The body is not valid JSON.",
                instance=request.scope["path"],
                errors=[{"field": "(body)", "message": "not valid JSON", "code": "json_invalid"}],
            )
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(422, detail, errors=errors, instance=request.scope["path"])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # RFC 9110 15.5.6: Allow lists every method of the path, not one route's
            headers = {**(headers or {}), "Allow": allowed_methods(request.app, request.scope)}
        return problem_response(exc.status_code, str(exc.detail), instance=request.scope["path"], headers=headers)
