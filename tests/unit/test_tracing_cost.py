"""What tracing costs nothing for: no hooks at all when it is off, no span (nor the wrapper
that would start one) per pool checkout."""

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from messaging.telemetry.db_spans import _DbTracer, instrument_engine, uninstrument_engines
from messaging.telemetry.providers import setup_telemetry
from messaging.telemetry.span_rewriting import RewritingTracerProvider


def test_tracing_off_instruments_no_engine() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    instrument_engine(engine, NoOpTracerProvider())
    assert len(engine.sync_engine.dispatch.before_cursor_execute) == 0
    assert len(engine.sync_engine.dispatch.after_cursor_execute) == 0


def test_sdk_disabled_means_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not setup_telemetry("reservations-test", set_global=False).enabled


def test_a_pool_checkout_makes_no_span_and_keeps_the_parent() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    db_spans = RewritingTracerProvider(provider, lambda tracer: _DbTracer(tracer, "reservations"))
    db_tracer = db_spans.get_tracer("test")
    with provider.get_tracer("test").start_as_current_span("process") as parent:
        with db_tracer.start_as_current_span("connect") as checkout:
            assert not checkout.is_recording()
            assert checkout.get_span_context() == parent.get_span_context()
        with db_tracer.start_as_current_span("UPDATE reservations") as statement:
            assert statement.is_recording()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["UPDATE", "process"]


def test_a_pool_checkout_runs_no_instrumentation_code() -> None:
    """The SQLAlchemy instrumentor wraps Engine.connect to start a "connect" span, which is
    dropped anyway: the wrapper is removed, and the statements are still traced."""
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        instrument_engine(engine, TracerProvider())
        assert not hasattr(Engine.connect, "__wrapped__")
        assert len(engine.sync_engine.dispatch.before_cursor_execute) == 1
    finally:
        uninstrument_engines()
