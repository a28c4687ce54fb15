"""OpenTelemetry spans across HTTP, outbox, Kafka and consumers.

The trace context travels as a W3C `traceparent`: from an HTTP request into the outbox row (stored
with the event), from the outbox into Kafka headers and the CloudEvents `traceparent` attribute, and
from there into the consumer's span, so one payment can be followed across all four services.
"""

from functools import lru_cache

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


EXPORTERS = ("none", "console", "otlp")


def tracer_provider(service: str, exporter: str = "none", span_exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider exporting spans: `exporter` is OTEL_TRACES_EXPORTER's value. "otlp" sends OTLP/HTTP
    (protobuf) to the endpoint of the standard variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
    OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (default http://localhost:4318), with their headers,
    timeout and compression. "console": JSON spans on stdout. "none": spans are made (their ids
    reach the logs and the traceparent headers) but not exported."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if span_exporter is None:
        kind = (exporter or "none").strip().lower()
        if kind == "console":
            span_exporter = ConsoleSpanExporter()
        elif kind in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            span_exporter = OTLPSpanExporter()
        elif kind != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def configure_tracing(
    service: str, exporter: str = "none", span_exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the process's tracer provider (once per process; see tracer_provider)."""
    provider = tracer_provider(service, exporter, span_exporter)
    trace.set_tracer_provider(provider)
    return provider


@lru_cache(maxsize=16)
def tracer(name: str = "dunning"):
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None):
    if not traceparent:
        return otel_context.get_current()
    return _propagator.extract({"traceparent": traceparent})
