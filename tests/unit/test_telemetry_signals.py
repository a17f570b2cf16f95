"""A signal turned off with ``OTEL_{LOGS,METRICS}_EXPORTER=none`` costs nothing: no provider
building records or taking measurements only to drop them, no handler on the root logger."""

import logging

import pytest
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

from messaging.telemetry.otel_logs import OtelLogHandler
from messaging.telemetry.providers import Telemetry, setup_telemetry


def _set_up(monkeypatch: pytest.MonkeyPatch, logs: str, metrics: str) -> Telemetry:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", logs)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", metrics)
    return setup_telemetry("signals-test", set_global=False)


def _otel_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, OtelLogHandler)]


@pytest.mark.parametrize(
    ("logs", "metrics"),
    [("none", "none"), ("none", "console"), ("console", "none"), ("console", "console")],
)
def test_each_signal_gets_the_sdk_only_with_an_exporter(
    monkeypatch: pytest.MonkeyPatch, logs: str, metrics: str
) -> None:
    before = _otel_handlers()
    telemetry = _set_up(monkeypatch, logs=logs, metrics=metrics)
    try:
        assert telemetry.enabled  # spans are recorded whatever the other two signals do
        meter_type = NoOpMeterProvider if metrics == "none" else SdkMeterProvider
        logger_type = NoOpLoggerProvider if logs == "none" else SdkLoggerProvider
        assert isinstance(telemetry.meter_provider, meter_type)
        assert isinstance(telemetry.logger_provider, logger_type)
        if logs == "none":
            assert telemetry.log_handler is None
            assert _otel_handlers() == before
        else:
            assert telemetry.log_handler in _otel_handlers()
    finally:
        telemetry.shutdown()
    assert _otel_handlers() == before
