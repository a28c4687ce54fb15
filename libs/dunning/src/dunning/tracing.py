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
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


def configure_tracing(service: str, exporter: str = "none", span_exporter: SpanExporter | None = None) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":  # optional: only if the exporter package is installed
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


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
