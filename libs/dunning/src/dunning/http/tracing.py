"""A server span per request, named from the route template, and unexpected errors answered inside it.

The span continues the caller's `traceparent`; its trace id is bound to the request's log lines and
returned in a `traceparent` response header. An exception no handler took is answered here, still
inside the span and the request's log context, as a problem carrying the trace id (so its one log
line carries trace and tenant ids, and nothing re-raises it into Starlette's ServerErrorMiddleware or
uvicorn, which would print a second, plain-text traceback). Plain ASGI: Starlette's
BaseHTTPMiddleware costs a task and a queue per request.
"""

import uuid

import asyncpg
import orjson
from opentelemetry.trace import SpanKind, Status, StatusCode

from dunning.http.problems import PROBLEM, problem_body
from dunning.logging import bind_context, clear_context, get_logger
from dunning.tracing import context_from_traceparent, current_traceparent, tracer

log = get_logger("dunning.http")
# Infrastructure that may be back in a moment: a 503 that says so. Anything else is a bug, which the
# same request would hit again: a 500 that says which id to quote, never that a retry is safe.
UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def route_template(scope) -> str | None:
    """The matched route's path template (`/v1/invoices/{invoice_id}`), once the router has run."""
    route = scope.get("route")
    return getattr(route, "path", None)


class TracingMiddleware:
    def __init__(self, app, service: str):
        self.app = app
        self.tracer = tracer(service)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                incoming = value.decode("latin-1")
                break
        method = scope["method"]
        with self.tracer.start_as_current_span(
            method,
            context=context_from_traceparent(incoming),
            kind=SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            traceparent = current_traceparent()
            trace_id = traceparent.split("-")[1] if traceparent else None
            bind_context(trace_id=trace_id)
            started = False

            async def send_with_trace(message):
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    span.set_attribute("http.response.status_code", message["status"])
                    if traceparent:
                        message["headers"] = [*message.get("headers", ()), (b"traceparent", traceparent.encode())]
                await send(message)

            try:
                await self.app(scope, receive, send_with_trace)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                await self._answer(scope, send_with_trace, exc, trace_id, started)
            finally:
                template = route_template(scope)
                if template is not None:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                clear_context("trace_id", "tenant_id", "invoice_id")

    @staticmethod
    async def _answer(scope, send, exc: Exception, trace_id: str | None, started: bool) -> None:
        unavailable = isinstance(exc, UNAVAILABLE)
        error_id = trace_id or uuid.uuid4().hex  # without a tracer (no trace id), an id of its own to quote
        log.error(
            "http.unavailable" if unavailable else "http.unhandled",
            method=scope["method"],
            route=route_template(scope),
            error_id=error_id,
            exc_info=exc,
        )
        if started:  # the response is under way: nothing can be said any more
            return
        if unavailable:
            status, detail = 503, "A backing service is unavailable; retry in a moment."
        else:
            status = 500
            detail = (
                "The request could not be completed because of an error on our side; quote error id "
                f"{error_id} when reporting it."
            )
        body = problem_body(status, detail, instance=scope["path"].encode("utf-8", "replace").decode())
        body["error_id"] = error_id
        payload = orjson.dumps(body)
        headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(payload)).encode())]
        if unavailable:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
