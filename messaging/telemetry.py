"""Tracer provider setup, done once per process from a composition root.

Call :func:`setup_telemetry` from the FastAPI lifespan or a worker's ``main()``, never at import:
a process can set its global tracer provider only once, and ``BatchSpanProcessor`` starts a
thread that does not survive a fork.

Only the standard OpenTelemetry variables are read:

- ``OTEL_SERVICE_NAME`` (else the service's default name);
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default), ``console`` or ``none``;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (gRPC), read by the
  exporter itself;
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, read by the SDK's default sampler
  (``parentbased_always_on`` unless set, so a worker follows the API's decision);
- ``OTEL_BSP_*`` (batch processor) and ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``;
- ``OTEL_SDK_DISABLED=true`` turns tracing off entirely (no provider, no instrumentation).
"""

import os
import threading
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import NoOpTracerProvider

from messaging import propagation
from messaging.instrumentation import SemconvTracerProvider

log = structlog.get_logger(__name__)

# Seconds shutdown waits for the last spans to be exported.
SHUTDOWN_TIMEOUT = 3.0
# Bound attribute values (an oversized header copied into an attribute must not bloat spans).
DEFAULT_ATTRIBUTE_LENGTH_LIMIT = 1024


class TelemetryConfigError(ValueError):
    """An OTEL_* variable holds a value this project does not support."""


@dataclass
class Telemetry:
    """The process's tracing handle, owned by its composition root."""

    service_name: str
    provider: trace.TracerProvider

    def shutdown(self, within: float = SHUTDOWN_TIMEOUT) -> None:
        """Flush queued spans, stop the exporter and remove the aio-pika patches; call once,
        on the way out. Bounded: with the tracing backend down or hanging, the exporter would
        retry for its whole timeout, so after ``within`` seconds the spans still queued are
        dropped and the process goes on exiting."""
        if not isinstance(self.provider, TracerProvider):
            return
        uninstrument_aio_pika()
        flushing = threading.Thread(
            target=self.provider.shutdown, name="otel-shutdown", daemon=True
        )
        flushing.start()
        flushing.join(within)
        if flushing.is_alive():
            log.warning("tracing backend unreachable: unexported spans dropped", within=within)


def service_version() -> str:
    try:
        return version("async-trace-reservations")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def setup_telemetry(default_service_name: str, *, set_global: bool = True) -> Telemetry:
    """Build the tracer provider and instrument aio-pika with it.

    The FastAPI and SQLAlchemy instrumentations are per app and per engine; their owners call
    them with ``telemetry.provider``.
    """
    service_name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    propagation.install()  # garbage trace headers must never break a consumer
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry(service_name, NoOpTracerProvider())

    resource = Resource.create(
        {
            SERVICE_NAME: service_name,
            SERVICE_VERSION: service_version(),
            SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        }
    )
    limits = SpanLimits(
        max_attribute_length=_int_env(
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", DEFAULT_ATTRIBUTE_LENGTH_LIMIT
        )
    )
    provider = TracerProvider(resource=resource, span_limits=limits)
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    instrument_aio_pika(provider)
    return Telemetry(service_name, provider)


def instrument_aio_pika(provider: trace.TracerProvider) -> None:
    """Patch ``Exchange.publish`` and ``Queue.consume`` once per process."""
    uninstrument_aio_pika()
    AioPikaInstrumentor().instrument(tracer_provider=SemconvTracerProvider(provider))


def uninstrument_aio_pika() -> None:
    instrumentor = AioPikaInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def _exporters() -> list[SpanExporter]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            # Imported lazily: gRPC is heavy and useless when tracing goes to the console.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise TelemetryConfigError(
                f"OTEL_TRACES_EXPORTER={names!r}: use 'otlp', 'console' or 'none'"
            )
    return exporters


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise TelemetryConfigError(f"{name}={raw!r} is not an integer") from None
