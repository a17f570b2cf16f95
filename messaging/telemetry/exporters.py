"""Which exporters each signal gets, read from the standard OpenTelemetry variables.

Spans, log records and metrics each have their own ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``
(``otlp`` by default, ``console`` or ``none``) and may each go somewhere else: the OTLP
exporters read ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the per-signal
``OTEL_EXPORTER_OTLP_{TRACES,LOGS,METRICS}_ENDPOINT`` themselves. The protocol is chosen here,
from ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc``
(this project's default, what Tempo and the test receivers listen on) or ``http/protobuf``
(what Loki's and Prometheus's native OTLP endpoints accept). The exporters are imported
lazily: gRPC and HTTP clients are heavy and useless when a signal goes to the console.
"""

import os
from typing import Literal

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

Signal = Literal["traces", "logs", "metrics"]
SIGNALS: tuple[Signal, ...] = ("traces", "logs", "metrics")
PROTOCOLS = ("grpc", "http/protobuf")


class TelemetryConfigError(ValueError):
    """An OTEL_* variable holds a value this project does not support."""


def exporter_names(signal: Signal) -> list[str]:
    """The exporters named in ``OTEL_{SIGNAL}_EXPORTER``; ``none`` alone means no exporter."""
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    raw = os.environ.get(variable, "otlp").strip().lower() or "otlp"
    names = [name.strip() for name in raw.split(",")]
    for name in names:
        if name not in ("otlp", "console", "none"):
            raise TelemetryConfigError(f"{variable}={raw!r}: use 'otlp', 'console' or 'none'")
    return [name for name in names if name != "none"]


def protocol(signal: Signal) -> str:
    variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    if not os.environ.get(variable):
        variable = "OTEL_EXPORTER_OTLP_PROTOCOL"  # the one read instead: named if refused
    raw = os.environ.get(variable) or "grpc"
    value = raw.strip().lower()
    if value not in PROTOCOLS:
        raise TelemetryConfigError(f"{variable}={raw!r}: use 'grpc' or 'http/protobuf'")
    return value


def span_exporters() -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in exporter_names("traces"):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            exporters.append(HttpSpanExporter())
    return exporters


def log_exporters() -> list[LogRecordExporter]:
    exporters: list[LogRecordExporter] = []
    for name in exporter_names("logs"):
        if name == "console":
            exporters.append(ConsoleLogRecordExporter())
        elif protocol("logs") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

            exporters.append(OTLPLogExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import (
                OTLPLogExporter as HttpLogExporter,
            )

            exporters.append(HttpLogExporter())
    return exporters


def metric_exporters() -> list[MetricExporter]:
    exporters: list[MetricExporter] = []
    for name in exporter_names("metrics"):
        if name == "console":
            exporters.append(ConsoleMetricExporter())
        elif protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporters.append(OTLPMetricExporter())
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            exporters.append(HttpMetricExporter())
    return exporters
