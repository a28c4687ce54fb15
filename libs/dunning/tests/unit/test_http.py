"""The HTTP plumbing every service shares: cursors, and what the edge guard refuses (one field named)."""

import re

import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI, Request

from dunning.http import JSON_BODY, InputGuard, Problem, decode_cursor, encode_cursor, page

pytestmark = pytest.mark.unit
ID = re.compile(r"^inv_[0-9A-Za-z]{10,40}$")


def test_cursor_round_trips_and_refuses_garbage():
    assert decode_cursor(encode_cursor("inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"), ID) == "inv_01JCQ4Z8K7M2P9R3T5V6W8X0YA"
    for bad in ["nope", "", encode_cursor("'; DROP TABLE invoices;--"), "eyJhZnRlciI6IDF9"]:
        with pytest.raises(Problem) as info:
            decode_cursor(bad, ID)
        assert info.value.errors[0]["field"] == "cursor"


def test_a_page_has_a_cursor_only_when_more_rows_follow():
    assert page(["a", "b", "c"], 2, key=str) == {"data": ["a", "b"], "next_cursor": encode_cursor("b")}
    assert page(["a", "b"], 2, key=str) == {"data": ["a", "b"], "next_cursor": None}
    assert page([], 2, key=str) == {"data": [], "next_cursor": None}


def _echo_app(max_body_bytes: int = 1_000_000) -> FastAPI:
    app = FastAPI()

    @app.post("/things/{thing_id}")
    async def thing(thing_id: str, request: Request) -> dict:
        return {"parsed": JSON_BODY in request.scope, "body": orjson.loads(await request.body())}

    app.add_middleware(InputGuard, max_body_bytes=max_body_bytes)
    return app


def _nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "path, content, status, field",
    [
        pytest.param("/things/a%00b", b"{}", 422, "thing_id", id="nul-in-path"),
        pytest.param("/things/a%ED%A0%80", b"{}", 400, "thing_id", id="surrogate-in-path"),
        pytest.param("/things/a?q=x%00", b"{}", 422, "q", id="nul-in-query"),
        pytest.param("/things/a?q=%ED%B0%80", b"{}", 400, "q", id="surrogate-in-query"),
        pytest.param("/things/a", b'{"a": {"b": ["ok", "x\\u0000"]}}', 422, "a.b.1", id="nul-in-json"),
        pytest.param("/things/a", b'{"a": "\\ud800"}', 422, "a", id="lone-surrogate-in-json"),
        pytest.param("/things/a", b'{"\\u0000": 1}', 422, "\ufffd", id="nul-in-key"),
        pytest.param("/things/a", _nested(100_000), 400, "(body)", id="nested-100000"),
        pytest.param("/things/a", _nested(64), 400, "(body)", id="nested-65-levels"),
        pytest.param("/things/a", b'{"a": "' + b"x" * 1_000_001 + b'"}', 413, "(body)", id="too-large"),
    ],
)
async def test_the_guard_refuses_what_no_route_should_see(path, content, status, field):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_echo_app()), base_url="http://t") as client:
        r = await client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == field


async def test_a_refused_path_segment_is_named_on_a_route_of_an_included_router():
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/tasks/{task_id}")
    async def task(task_id: str) -> dict:
        return {"task_id": task_id}

    app.include_router(router)
    app.add_middleware(InputGuard, max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/v1/tasks/a%00b")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "task_id"


async def test_clean_and_escaped_text_pass_and_a_parsed_body_is_shared():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_echo_app()), base_url="http://t") as client:
        plain = await client.post("/things/a", content=b'{"a": "caf\\u00e9 \\\\u0000"}')
        pair = await client.post("/things/a", content=b'{"a": "\\ud83d\\ude00"}')
        deep = await client.post("/things/a", content=_nested(63))  # 64 levels with the object
    assert plain.json() == {"parsed": True, "body": {"a": "café \\u0000"}}
    assert pair.json()["body"] == {"a": "\U0001f600"}
    assert deep.status_code == 200


def _failing_app(monkeypatch, exporter) -> FastAPI:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from dunning.http import tracing as http_tracing
    from dunning.http.problems import install_problem_handlers
    from dunning.logging import bind_context

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(http_tracing, "tracer", lambda name: provider.get_tracer(name))
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom/{thing}")
    async def boom(thing: str) -> dict:
        bind_context(tenant_id="ten_boom")
        if thing == "db":
            raise ConnectionRefusedError("database down")
        raise ZeroDivisionError("a bug")

    app.add_middleware(http_tracing.TracingMiddleware, service="test")
    return app


async def test_an_unexpected_error_is_answered_and_logged_once_inside_the_request_span(monkeypatch):
    import structlog
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, captured = InMemorySpanExporter(), structlog.testing.LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
    try:
        # raise_app_exceptions: had the middleware re-raised (into Starlette's ServerErrorMiddleware and
        # uvicorn, which print a second, plain-text traceback), the client would raise here
        transport = httpx.ASGITransport(app=_failing_app(monkeypatch, exporter), raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            bug = await client.get("/boom/x")
            down = await client.get("/boom/db")
    finally:
        structlog.configure(**old)
    assert bug.status_code == 500 and bug.headers["content-type"] == "application/problem+json"
    problem = bug.json()
    assert "retry" not in problem["detail"] and problem["error_id"] in problem["detail"]
    assert down.status_code == 503 and "retry" in down.json()["detail"]
    [unhandled] = [e for e in captured.entries if e["event"] == "http.unhandled"]
    assert unhandled["trace_id"] == problem["error_id"] and unhandled["tenant_id"] == "ten_boom"
    assert unhandled["route"] == "/boom/{thing}" and unhandled["exc_info"]
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /boom/{thing}", "GET /boom/{thing}"]  # the template, not /boom/x
    assert format(spans[0].context.trace_id, "032x") == problem["error_id"]


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        pytest.param("/v1/policy", "GET, PUT", id="two-routes-one-path"),
        pytest.param("/v1/things/bulk", "POST", id="literal-path-beside-a-template"),
        pytest.param("/v1/things/thg_1", "GET", id="templated-path"),
    ],
)
async def test_a_405_names_every_method_of_the_path(path, allow):
    from dunning.http.problems import install_problem_handlers

    app = FastAPI()
    app.get("/v1/policy")(lambda: {})
    app.put("/v1/policy")(lambda: {})
    app.post("/v1/things/bulk")(lambda: {})
    app.get("/v1/things/{thing_id}")(lambda thing_id: {})
    install_problem_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        answer = await client.request("DELETE", path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.headers["content-type"] == "application/problem+json"
