"""Each signal's exporters from the standard variables: names, protocol, refusals."""

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

from messaging.telemetry.exporters import (
    TelemetryConfigError,
    exporter_names,
    log_exporters,
    metric_exporters,
    protocol,
)


def test_otlp_over_grpc_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", raising=False)
    assert exporter_names("logs") == ["otlp"]
    assert protocol("logs") == "grpc"
    assert [type(e) for e in log_exporters()] == [GrpcLogs]


def test_a_signal_gets_its_own_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    assert [type(e) for e in metric_exporters()] == [HttpMetrics]


def test_console_none_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console")
    assert [type(e) for e in log_exporters()] == [ConsoleLogRecordExporter]
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert metric_exporters() == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_LOGS_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
    ],
)
def test_unsupported_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    monkeypatch.setenv(variable, value)
    with pytest.raises(TelemetryConfigError, match=variable):
        log_exporters()
