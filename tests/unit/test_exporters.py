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
from messaging.telemetry.providers import refused_settings


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


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("OTEL_TRACES_EXPORTER", "bogus", "OTEL_TRACES_EXPORTER='bogus'"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-5", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT must be"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000", "OTEL_BSP_* or OTEL_BLRP_*: max_export"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "10", "OTEL_BSP_* or OTEL_BLRP_*: max_export_batch_size"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc", "OTEL_EXPORTER_OTLP_*: could not convert"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "compression envvar OTEL_EXPORTER_OTLP_COMP"),
    ],
)
def test_a_setting_that_would_fail_the_start_up_is_refused_by_name(
    variable: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failed the services' start-up with a traceback (a review's): now it is in their
    one settings line."""
    for signal in ("TRACES", "LOGS", "METRICS"):  # the suite may turn them off
        monkeypatch.setenv(f"OTEL_{signal}_EXPORTER", "otlp")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv(variable, value)
    refused = refused_settings()
    assert len(refused) == 1 and said in refused[0], refused


def test_the_default_settings_are_not_refused() -> None:
    assert refused_settings() == []
