"""Log lines leave as OpenTelemetry log records: ids of the current span, body, attributes."""

import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from messaging.telemetry.logs import configure_logging
from messaging.telemetry.otel_logs import OtelLogHandler
from tests.logs import logging_restored
from tests.spans import in_memory_provider


@pytest.fixture
def exported() -> Iterator[InMemoryLogRecordExporter]:
    """The console logging of a service, plus the OTel handler on a per-test provider."""
    with logging_restored():
        configure_logging("unit-test")
        exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        provider = LoggerProvider(shutdown_on_exit=False)
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        handler = OtelLogHandler(provider)
        logging.getLogger().addHandler(handler)
        yield exporter
        provider.shutdown()


def test_a_structlog_line_keeps_its_span_ids_and_its_fields(
    exported: InMemoryLogRecordExporter, ref: str
) -> None:
    tracer_provider, _ = in_memory_provider()
    with tracer_provider.get_tracer("test").start_as_current_span("work") as span:
        structlog.get_logger("tests.unit").info("credit checked", ref=ref, left=90, ok=True)
    (record,) = [r.log_record for r in exported.get_finished_logs()]
    context = span.get_span_context()
    assert (record.trace_id, record.span_id) == (context.trace_id, context.span_id)
    assert record.body == "credit checked"
    assert (record.severity_number, record.severity_text) == (SeverityNumber.INFO, "INFO")
    assert dict(record.attributes or {}) == {"ref": ref, "left": 90, "ok": True}


def test_a_stdlib_line_outside_a_span_has_no_ids_and_keeps_its_exception(
    exported: InMemoryLogRecordExporter,
) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("some.library").exception("it failed: %s", "badly")
    (record,) = [r.log_record for r in exported.get_finished_logs()]
    assert (record.trace_id, record.span_id) == (0, 0)
    assert record.body == "it failed: badly"
    assert record.severity_text == "ERROR"
    attributes = dict(record.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert "boom" in str(attributes["exception.stacktrace"])


def test_the_sdk_never_exports_its_own_diagnostics(exported: InMemoryLogRecordExporter) -> None:
    # A failing exporter logs under opentelemetry.*: exporting that would feed the failure back.
    logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").error("export failed")
    structlog.get_logger("tests.unit").warning("kept", detail={"nested": [1, 2]})
    records = [r.log_record for r in exported.get_finished_logs()]
    assert [r.body for r in records] == ["kept"]
    assert dict(records[0].attributes or {}) == {"detail": "{'nested': [1, 2]}"}
