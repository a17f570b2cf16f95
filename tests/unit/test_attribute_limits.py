"""Attribute values are bounded, but not below what a span needs: an exception's whole stack
trace (a database error's is some 6 KB) stays readable; a runaway value is cut."""

import traceback

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from messaging.telemetry.providers import DEFAULT_ATTRIBUTE_LENGTH_LIMIT, setup_telemetry


def _failure() -> RuntimeError:
    """An exception with a cause with a cause...: a traceback of some 4 KB, like a driver
    error wrapped by SQLAlchemy's."""
    cause: Exception | None = None
    for level in range(6):
        try:
            raise ValueError(f"level {level}: " + "detail " * 60) from cause
        except ValueError as exc:
            cause = exc
    try:
        raise RuntimeError("the database is on fire") from cause
    except RuntimeError as exc:
        return exc


def test_a_stack_trace_is_kept_whole_and_a_runaway_value_is_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    telemetry = setup_telemetry("limits-test", set_global=False)
    try:
        assert isinstance(telemetry.provider, TracerProvider)
        exporter = InMemorySpanExporter()
        telemetry.provider.add_span_processor(SimpleSpanProcessor(exporter))
        with telemetry.provider.get_tracer("test").start_as_current_span("work") as span:
            span.set_attribute("user_agent.original", "x" * 100_000)
            failure = _failure()
            span.record_exception(failure)
        (finished,) = exporter.get_finished_spans()
        assert finished.attributes is not None
        assert (
            len(str(finished.attributes["user_agent.original"])) == DEFAULT_ATTRIBUTE_LENGTH_LIMIT
        )
        stack = str(finished.events[0].attributes["exception.stacktrace"])  # type: ignore[index]
        whole = "".join(traceback.format_exception(failure))
        assert 1024 < len(whole) <= DEFAULT_ATTRIBUTE_LENGTH_LIMIT  # the old cap cut this one
        assert stack == whole
    finally:
        telemetry.shutdown()
