"""Tracing for the twin: the system's pinned OpenTelemetry packages, or nothing at all.

Traced: an SDK provider at the sampler the environment names (the bench: 100 %), a batch
processor exporting OTLP/gRPC (``OTEL_EXPORTER_OTLP_ENDPOINT``), and the contrib aio-pika
instrumentation, which injects ``traceparent`` into the AMQP headers on publish and parents
each CONSUMER span on them. Untraced (``OTEL_SDK_DISABLED=true``): no provider and no
instrumentation, and the hot path never calls into OpenTelemetry.
"""

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SHUTDOWN_TIMEOUT_MS = 3000
_W3C = TraceContextTextMapPropagator()


@dataclass
class Tracing:
    provider: TracerProvider | None
    tracer: Tracer | None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, str | int | bool], kind: SpanKind
    ) -> Iterator[Span | None]:
        if self.tracer is None:
            yield None
            return
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            yield span

    def server_span(
        self, name: str, traceparent: str | None
    ) -> contextlib.AbstractContextManager[Span]:
        """The HTTP SERVER span, continuing an incoming W3C ``traceparent`` if there is one."""
        assert self.tracer is not None
        context: Context | None = None
        if traceparent:
            context = _W3C.extract({"traceparent": traceparent})
        return self.tracer.start_as_current_span(name, context=context, kind=SpanKind.SERVER)

    def shutdown(self) -> None:
        if self.provider is None:
            return
        AioPikaInstrumentor().uninstrument()
        self.provider.force_flush(SHUTDOWN_TIMEOUT_MS)
        self.provider.shutdown()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def set_up(service_name: str, enabled: bool) -> Tracing:
    if not enabled:
        return Tracing(None, None)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    AioPikaInstrumentor().instrument(tracer_provider=provider)
    return Tracing(provider, provider.get_tracer("bench.twin"))
