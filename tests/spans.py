"""Tracing test helpers: a per-test provider with an in-memory exporter (as faststream does)."""

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from messaging.telemetry.providers import instrument_aio_pika, uninstrument_aio_pika


def in_memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    matches = [s for s in spans if s.name == name]
    assert len(matches) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return matches[0]


@contextmanager
def aio_pika_traced_by(provider: TracerProvider) -> Iterator[None]:
    """Instrument aio-pika in this process for one test, then remove the patches again."""
    instrument_aio_pika(provider)
    try:
        yield
    finally:
        uninstrument_aio_pika()
