"""The embedded collector answers all three OTLP services on one port: the SDK's own gRPC
exporters send it log records and metrics, and each export succeeds (no UNIMPLEMENTED)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from cli.collector import OtlpReceiver, SpanStore
from cli.log_records import LogLine
from cli.log_store import LOGS_FILE, LogStore, compact_logs_file, read_trace_logs
from cli.trace_files import REWRITE_AFTER
from tests.waiting import eventually

RESOURCE = Resource.create({"service.name": "credit-check-worker"})


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[OtlpReceiver]:
    logs = LogStore(max_traces=2, store_dir=tmp_path)
    receiver = OtlpReceiver(SpanStore(), logs=logs).start()
    yield receiver
    receiver.stop()


def test_log_records_are_kept_with_their_trace_and_span(
    collector: OtlpReceiver, tmp_path: Path
) -> None:
    tracer = TracerProvider().get_tracer("test")
    provider = LoggerProvider(resource=RESOURCE)
    exporter = OTLPLogExporter(endpoint=collector.endpoint, insecure=True)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("workers.credit_check")
    with tracer.start_as_current_span("process") as span:
        logger.emit(
            LogRecord(severity_number=SeverityNumber.INFO, severity_text="INFO", body="checked")
        )
    logger.emit(LogRecord(severity_number=SeverityNumber.INFO, body="outside any span"))
    provider.shutdown()

    context = span.get_span_context()
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    (line,) = collector.logs.trace(trace_id)
    assert (line.span_id, line.body, line.severity) == (span_id, "checked", "INFO")
    assert line.service == "credit-check-worker" and line.time_ns > 0
    assert collector.logs.received == 2  # the untraced line is counted, not kept
    collector.logs.close()
    assert read_trace_logs(tmp_path, trace_id) == [line]


def test_metrics_keep_the_latest_value_of_each_series(collector: OtlpReceiver) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    counter = provider.get_meter("messaging").create_counter("messaging.client.consumed.messages")
    exporter = OTLPMetricExporter(endpoint=f"{collector.endpoint}", insecure=True)
    destination = {"messaging.destination.name": "reservations.requested"}
    for _ in range(2):  # cumulative: the second export replaces the first
        counter.add(3, destination)
        counter.add(1, {"messaging.destination.name": "other"})
        data = reader.get_metrics_data()
        assert data is not None
        assert exporter.export(data) is MetricExportResult.SUCCESS
    exporter.shutdown()
    for attempt in eventually(5):
        with attempt:
            assert collector.metrics.points == 4
    assert collector.metrics.total("messaging.client.consumed.messages", destination) == 6
    assert collector.metrics.total("messaging.client.consumed.messages") == 8
    (series, _) = collector.metrics.series("messaging.client.consumed.messages")
    assert series.service == "credit-check-worker"


def test_the_logs_file_keeps_the_newest_traces(tmp_path: Path) -> None:
    store = LogStore(store_dir=tmp_path)
    for i in range(4):
        store.add([LogLine(f"{i}" * 32, "a" * 16, i, "INFO", f"line {i}", "api")])
    store.close()
    compact_logs_file(tmp_path, max_traces=2)
    assert len((tmp_path / LOGS_FILE).read_text().splitlines()) == 2
    assert [line.body for line in read_trace_logs(tmp_path, "3" * 32)] == ["line 3"]
    assert read_trace_logs(tmp_path, "1" * 32) == []


def test_the_logs_file_stays_bounded_during_a_run(tmp_path: Path) -> None:
    store = LogStore(max_traces=2, store_dir=tmp_path)
    for i in range(30):
        store.add([LogLine(f"{i:032x}", "a" * 16, i, "INFO", f"line {i}", "api")])
        assert len((tmp_path / LOGS_FILE).read_text().splitlines()) <= REWRITE_AFTER * 2 + 1
        assert [line.body for line in read_trace_logs(tmp_path, f"{i:032x}")] == [f"line {i}"]
    store.close()
    assert read_trace_logs(tmp_path, f"{0:032x}") == []
