"""Tracer, logger and meter providers, set up once per process from a composition root.

Call :func:`setup_telemetry` from the FastAPI lifespan or :func:`workers.runtime.serve`, never
at import: a process can set its global tracer provider only once, and the batch processors
start threads that do not survive a fork. It also attaches the OTLP log handler
(:mod:`messaging.telemetry.otel_logs`) to the root logger (unless
``OTEL_LOGS_EXPORTER=none``), so call it after :func:`messaging.telemetry.logs.configure_logging`.

Only the standard OpenTelemetry variables are read:

- ``OTEL_SERVICE_NAME`` (else the service's default name);
- ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``, the endpoints and protocols: see
  :mod:`messaging.telemetry.exporters`;
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, read by the SDK's default sampler
  (``parentbased_always_on`` unless set, so a worker follows the API's decision);
- ``OTEL_BSP_*``, ``OTEL_BLRP_*`` (batch processors), ``OTEL_METRIC_EXPORT_INTERVAL`` and
  ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``; ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` defaults here to
  :data:`SPAN_EXPORT_BATCH_SIZE`, not the SDK's 512;
- ``OTEL_SEMCONV_STABILITY_OPT_IN``, which defaults here to ``http,database``: the contrib
  instrumentations then write the stable HTTP and database conventions;
- ``OTEL_SDK_DISABLED=true`` turns all three signals off (no providers, no instrumentation).
"""

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version

import structlog
from opentelemetry import metrics, trace
from opentelemetry._logs import LoggerProvider, NoOpLoggerProvider
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from messaging import propagation
from messaging.instrumentation import SemconvTracerProvider
from messaging.telemetry.db_spans import uninstrument_engines
from messaging.telemetry.exporters import (
    SIGNALS,
    TelemetryConfigError,
    exporter_names,
    log_exporters,
    metric_exporters,
    protocol,
    span_exporters,
)
from messaging.telemetry.otel_logs import OtelLogHandler

__all__ = ["Telemetry", "TelemetryConfigError", "service_version", "setup_telemetry"]

log = structlog.get_logger(__name__)

# Seconds shutdown waits, in all, for the last spans, log records and metrics to be exported.
SHUTDOWN_TIMEOUT = 3.0
# Bound attribute values (an oversized header copied into an attribute must not bloat spans),
# but above an exception's stack trace (a database error's is some 6 KB): the SDK cuts a longer
# value, and logs a warning each time.
DEFAULT_ATTRIBUTE_LENGTH_LIMIT = 8192
# Spans per OTLP export. The exporter thread encodes a batch holding the GIL, and the event
# loop waits meanwhile: with the SDK's 512 the bench's traced p99 at 1 connection was 20 ms
# (p50 4 ms); with 128, 12 ms, at the same CPU per request (README, Performance).
SPAN_EXPORT_BATCH_SIZE = 128
# Stable HTTP and database conventions, unless the user chose otherwise.
SEMCONV_OPT_IN = "http,database"


@dataclass
class Telemetry:
    """The process's telemetry handle, owned by its composition root.

    ``provider`` traces, ``meter_provider`` feeds :class:`messaging.metrics.MessagingMetrics`
    and the FastAPI instrumentation, ``logger_provider`` receives every log line.
    """

    service_name: str
    provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider = field(default_factory=metrics.NoOpMeterProvider)
    logger_provider: LoggerProvider = field(default_factory=NoOpLoggerProvider)
    log_handler: logging.Handler | None = None

    @property
    def enabled(self) -> bool:
        """False with ``OTEL_SDK_DISABLED=true``: then instrument nothing, not even as no-ops."""
        return isinstance(self.provider, TracerProvider)

    def shutdown(self, within: float = SHUTDOWN_TIMEOUT) -> None:
        """Flush what is queued, stop the exporters and remove the aio-pika and SQLAlchemy
        patches and the log handler; call once, on the way out. Bounded: with a backend down or
        hanging, an exporter would retry for its whole timeout, so after ``within`` seconds (for
        all three signals together) whatever is still queued is dropped and the process goes on
        exiting."""
        if self.log_handler is not None:
            logging.getLogger().removeHandler(self.log_handler)
        if isinstance(self.provider, TracerProvider):
            uninstrument_aio_pika()
            uninstrument_engines()
        stops: list[Callable[[], object]] = [
            p.shutdown
            for p in (self.provider, self.meter_provider, self.logger_provider)
            if isinstance(p, TracerProvider | SdkMeterProvider | SdkLoggerProvider)
        ]
        threads = [
            threading.Thread(target=stop, name="otel-shutdown", daemon=True) for stop in stops
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + within
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            log.warning("telemetry backend unreachable: unexported data dropped", within=within)


def service_version() -> str:
    try:
        return version("async-trace-reservations")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    """``OTEL_SDK_DISABLED=true`` (any case), the standard switch for all three signals."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def setup_telemetry(default_service_name: str, *, set_global: bool = True) -> Telemetry:
    """Build the three providers, instrument aio-pika and send log records over OTLP.

    A signal without an exporter (``OTEL_{LOGS,METRICS}_EXPORTER=none``) gets a no-op provider:
    no record is built and no measurement taken only to be dropped.

    The FastAPI and SQLAlchemy instrumentations are per app and per engine; their owners call
    them with ``telemetry.provider`` (and ``telemetry.meter_provider``).
    """
    # Read once per process by the contrib instrumentations: set before any of them runs.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", SEMCONV_OPT_IN)
    service_name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    propagation.install()  # garbage trace headers must never break a consumer
    if sdk_disabled(os.environ):
        return Telemetry(service_name, NoOpTracerProvider())

    resource = Resource.create(
        {
            SERVICE_NAME: service_name,
            SERVICE_VERSION: service_version(),
            SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        }
    )
    provider = TracerProvider(resource=resource, span_limits=_span_limits())
    for exporter in span_exporters():
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_export_batch_size=_span_batch_size())
        )
    meter_provider, logger_provider = _meter_provider(resource), _logger_provider(resource)
    handler = None
    if isinstance(logger_provider, SdkLoggerProvider):
        handler = OtelLogHandler(logger_provider)
        logging.getLogger().addHandler(handler)
    if set_global:
        trace.set_tracer_provider(provider)
    instrument_aio_pika(provider)
    return Telemetry(service_name, provider, meter_provider, logger_provider, handler)


def refused_settings() -> list[str]:
    """The OpenTelemetry variables :func:`setup_telemetry` would refuse, each in a clause
    naming it (for :func:`service.settings_check.check`): a service with one says so in its
    one settings line as it starts, not in a traceback from its start-up."""
    if sdk_disabled(os.environ):
        return []
    checks: list[Callable[[], object]] = [
        *(partial(exporter_names, signal) for signal in SIGNALS),
        *(partial(protocol, signal) for signal in SIGNALS),
        _span_batch_size,
        _span_limits,
    ]
    refused = []
    for check in checks:
        try:
            check()
        except ValueError as exc:  # the SDK's own too: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=-5
            refused.append(str(exc))
    if not refused:  # then build what those name, as setup_telemetry would
        for build, named in ((_exporters, "OTEL_EXPORTER_OTLP_*"), (_batches, BATCH_SETTINGS)):
            try:
                build()
            except Exception as exc:  # whatever the SDK raises for them: start-up would too
                said = str(exc)
                refused.append(said if "OTEL_" in said else f"{named}: {said}")
    return list(dict.fromkeys(refused))  # a variable all three signals read, named once


BATCH_SETTINGS = "OTEL_BSP_* or OTEL_BLRP_*"


def _exporters() -> None:
    """Build the exporters the environment names, and stop them, with nothing sent: their
    timeout, compression and headers are read as they are built (a gRPC channel connects only
    when used)."""
    exporters: list[SpanExporter | LogRecordExporter | MetricExporter] = [
        *span_exporters(),
        *log_exporters(),
        *metric_exporters(),
    ]
    for exporter in exporters:
        exporter.shutdown()


def _batches() -> None:
    """Build the batch processors, and stop them: a batch larger than the queue is refused."""
    spans = BatchSpanProcessor(InMemorySpanExporter(), max_export_batch_size=_span_batch_size())
    spans.shutdown()  # type: ignore[no-untyped-call]
    logs = BatchLogRecordProcessor(InMemoryLogRecordExporter())  # type: ignore[no-untyped-call]
    logs.shutdown()  # type: ignore[no-untyped-call]


def _span_limits() -> SpanLimits:
    return SpanLimits(
        max_attribute_length=_int_env(
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", DEFAULT_ATTRIBUTE_LENGTH_LIMIT
        )
    )


def _meter_provider(resource: Resource) -> metrics.MeterProvider:
    """No-op without an exporter. Telemetry.shutdown stops the SDK one, bounded: no unbounded
    atexit flush after it."""
    readers = [PeriodicExportingMetricReader(e) for e in metric_exporters()]
    if not readers:
        return metrics.NoOpMeterProvider()
    return SdkMeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)


def _logger_provider(resource: Resource) -> LoggerProvider:
    """No-op without an exporter; else batches to each (stopped by Telemetry.shutdown)."""
    exporters = log_exporters()
    if not exporters:
        return NoOpLoggerProvider()
    provider = SdkLoggerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def instrument_aio_pika(provider: trace.TracerProvider) -> None:
    """Patch ``Exchange.publish`` and ``Queue.consume`` once per process."""
    uninstrument_aio_pika()
    AioPikaInstrumentor().instrument(tracer_provider=SemconvTracerProvider(provider))


def uninstrument_aio_pika() -> None:
    instrumentor = AioPikaInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _span_batch_size() -> int | None:
    """None (the SDK reads the variable) if ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` is set, else
    our default, never above the queue's size."""
    if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip():
        return None
    queue_size = _int_env("OTEL_BSP_MAX_QUEUE_SIZE", SPAN_EXPORT_BATCH_SIZE)  # unset: no bound
    return min(SPAN_EXPORT_BATCH_SIZE, queue_size)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise TelemetryConfigError(f"{name}={raw!r} is not an integer") from None
