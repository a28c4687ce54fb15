"""structlog JSON logs bound with tenant, invoice, event and trace ids — for every log record.

Log events are dotted names with key/values (`log.info("dunning.stage.fired", invoice_id=...)`).
Request and message handlers bind ids with `bind_context`, so every line they log carries them.

Records of the standard library's `logging` (uvicorn, aiokafka, asyncio, ...) go through structlog's
ProcessorFormatter with the same processors, so they come out as the same JSON lines, with the same
bound ids and trace ids, plus `logger` (the record's logger name). structlog's own lines keep their
fast path (rendered straight to bytes, no logging.Logger in between).
"""

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace


def _add_trace_ids(_, __, event_dict):
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


# Both kinds of line: ids bound in the task, level, time, trace ids.
_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _add_trace_ids,
]


def _orjson_text(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj).decode()


class _StdlibHandler(logging.StreamHandler):
    """The root handler configure_logging installs (told apart from anybody else's on reconfiguring)."""


def configure_logging(service: str, level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or `stream`) for structlog and the standard library alike."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stream = stream or sys.stderr
    handler = _StdlibHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_orjson_text),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a record too (logger "py.warnings")
    for noisy in ("aiokafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(file=getattr(stream, "buffer", sys.stderr.buffer)),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def bind_context(**ids) -> None:
    """Bind ids (tenant_id, invoice_id, event_id, ...) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def clear_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def get_logger(name: str | None = None):
    return structlog.get_logger(name)
