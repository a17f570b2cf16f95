"""Every log line also leaves the process as an OpenTelemetry log record.

The console output (structlog, :mod:`messaging.telemetry.logs`) stays what people read in a
terminal. This handler sits beside it on the root logger and hands each record to the logs SDK,
which batches it to the OTLP exporter like a span. The record carries the ids of the span that was
current when the line was logged (the SDK reads them from the context), so a backend can show the
line under its span and a trace can list its lines.

A structlog line arrives as a dict: its ``event`` becomes the body and its other keys the
attributes. The ids, level, logger and service become the record's own fields and its resource,
not attributes. The SDK's own diagnostics (``opentelemetry.*``) are never exported through
itself: a failing exporter would otherwise feed its error back into the queue it failed on.
"""

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber
from opentelemetry.context import get_current
from opentelemetry.util.types import AnyValue

# Keys of a structlog event dict that the record carries elsewhere (or drops as redundant).
_NATIVE = {"event", "level", "logger", "timestamp", "trace_id", "span_id", "service.name"}
# The renamed ones: structlog's format_exc_info writes the traceback under "exception".
_RENAMED = {"exception": "exception.stacktrace"}
_SEVERITY = (
    (logging.CRITICAL, SeverityNumber.FATAL, "FATAL"),
    (logging.ERROR, SeverityNumber.ERROR, "ERROR"),
    (logging.WARNING, SeverityNumber.WARN, "WARN"),
    (logging.INFO, SeverityNumber.INFO, "INFO"),
    (logging.DEBUG, SeverityNumber.DEBUG, "DEBUG"),
)


class OtelLogHandler(logging.Handler):
    """A ``logging`` handler that emits each record through an OpenTelemetry logger."""

    def __init__(self, provider: LoggerProvider) -> None:
        super().__init__()
        self._provider = provider

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "opentelemetry" or record.name.startswith("opentelemetry."):
            return
        try:
            body, attributes = translate(record)
            severity_number, severity_text = severity(record.levelno)
            self._provider.get_logger(record.name).emit(
                LogRecord(
                    timestamp=int(record.created * 1e9),
                    context=get_current(),
                    severity_number=severity_number,
                    severity_text=severity_text,
                    body=body,
                    attributes=attributes,
                )
            )
        except Exception:  # logging's contract: a handler reports its failure, never raises
            self.handleError(record)


def translate(record: logging.LogRecord) -> tuple[str, dict[str, AnyValue]]:
    """The body and attributes of a stdlib or structlog record."""
    if isinstance(record.msg, Mapping) and not record.args:
        event = dict(record.msg)
        body = str(event.get("event", ""))
        attributes = {
            _RENAMED.get(key, key): _value(value)
            for key, value in event.items()
            if key not in _NATIVE and not key.startswith("_") and value is not None
        }
    else:
        body = record.getMessage()
        attributes = {}
    if record.exc_info and record.exc_info[0] is not None:
        attributes["exception.type"] = record.exc_info[0].__name__
        if "exception.stacktrace" not in attributes:
            formatter = logging.Formatter()
            attributes["exception.stacktrace"] = formatter.formatException(record.exc_info)
    return body, attributes


def severity(levelno: int) -> tuple[SeverityNumber, str]:
    for threshold, number, text in _SEVERITY:
        if levelno >= threshold:
            return number, text
    return SeverityNumber.TRACE, "TRACE"


def _value(value: Any) -> AnyValue:
    """OTLP attribute values are scalars or lists of them; anything else is shown as text."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(v, str | bool | int | float) for v in value
    ):
        return list(value)
    return str(value)
