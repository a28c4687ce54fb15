"""Logs and traces the same in every service: standard-library records as structlog's JSON lines, and
OTEL_TRACES_EXPORTER=otlp exporting to a collector (here a tiny local receiver)."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from dunning.tracing import tracer_provider

pytestmark = pytest.mark.unit

_LOGS = r"""
import asyncio, logging
from opentelemetry import trace
from dunning.logging import bind_context, configure_logging, get_logger
from dunning.tracing import configure_tracing

configure_logging("svc-test", "INFO")
configure_tracing("svc-test", "none")
bind_context(tenant_id="ten_1", invoice_id="inv_1")
with trace.get_tracer("t").start_as_current_span("work"):
    get_logger(__name__).info("dunning.test.done", rows=3)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("aiokafka.consumer").warning("Heartbeat failed for group %s", "g")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
logging.getLogger("aiokafka").info("chatter below WARNING stays out")
logging.getLogger("uvicorn.access").info("GET /healthz 200")
"""


def test_standard_library_records_are_the_same_json_lines_as_structlogs():
    run = subprocess.run([sys.executable, "-c", _LOGS], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    by_event = {line["event"]: line for line in lines}
    assert set(by_event) == {
        "dunning.test.done",
        "Started server process [42]",
        "Heartbeat failed for group g",
        "Task exception was never retrieved",
    }
    ours = by_event["dunning.test.done"]
    for line in lines:  # the same bound ids, level, time and trace ids on every line
        assert {k: line[k] for k in ("service", "tenant_id", "invoice_id", "trace_id")} == {
            "service": "svc-test",
            "tenant_id": "ten_1",
            "invoice_id": "inv_1",
            "trace_id": ours["trace_id"],
        }
        assert line["timestamp"].endswith("Z") and line["level"] in ("info", "warning", "error")
    assert by_event["Started server process [42]"]["logger"] == "uvicorn.error"
    assert by_event["Heartbeat failed for group g"]["level"] == "warning"
    failed = by_event["Task exception was never retrieved"]
    assert failed["level"] == "error" and "ZeroDivisionError" in failed["exception"]


class _Collector(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    _Collector.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.posts
    server.shutdown()
    server.server_close()


def test_otlp_exporter_posts_spans_to_the_configured_collector(collector, monkeypatch):
    endpoint, posts = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    provider = tracer_provider("svc-otlp", "otlp")  # what OTEL_TRACES_EXPORTER=otlp selects
    try:
        with provider.get_tracer("t").start_as_current_span("GET /v1/invoices/{invoice_id}"):
            pass
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()
    assert posts, "no span reached the collector"
    path, content_type, body = posts[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"svc-otlp" in body and b"GET /v1/invoices/{invoice_id}" in body


@pytest.mark.parametrize(
    ("exporter", "exporters"),
    [
        pytest.param("none", [], id="none: spans made, not exported"),
        pytest.param("console", ["ConsoleSpanExporter"], id="console"),
        pytest.param("OTLP", ["OTLPSpanExporter"], id="otlp, any case"),
    ],
)
def test_the_exporter_setting_selects_an_exporter(exporter, exporters, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = tracer_provider("svc", exporter)
    try:
        processors = provider._active_span_processor._span_processors
        assert [type(p.span_exporter).__name__ for p in processors] == exporters
    finally:
        provider.shutdown()


def test_an_unknown_exporter_is_refused_at_start():
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='jaeger'"):
        tracer_provider("svc", "jaeger")
