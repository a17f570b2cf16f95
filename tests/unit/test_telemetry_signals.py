"""A signal turned off with ``OTEL_{LOGS,METRICS}_EXPORTER=none`` costs nothing: no provider
building records or taking measurements only to drop them, no handler on the root logger."""

import logging

import pytest
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

from messaging.otel_logs import OtelLogHandler
from messaging.telemetry import Telemetry, setup_telemetry


def _set_up(monkeypatch: pytest.MonkeyPatch, logs: str, metrics: str) -> Telemetry:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", logs)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", metrics)
    return setup_telemetry("signals-test", set_global=False)


def _otel_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, OtelLogHandler)]


def test_signals_turned_off_get_no_op_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _otel_handlers()
    telemetry = _set_up(monkeypatch, logs="none", metrics="none")
    try:
        assert telemetry.enabled  # spans still recorded
        assert isinstance(telemetry.meter_provider, NoOpMeterProvider)
        assert isinstance(telemetry.logger_provider, NoOpLoggerProvider)
        assert telemetry.log_handler is None
        assert _otel_handlers() == before
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(("logs", "metrics"), [("none", "console"), ("console", "none")])
def test_each_signal_is_switched_on_its_own(
    monkeypatch: pytest.MonkeyPatch, logs: str, metrics: str
) -> None:
    telemetry = _set_up(monkeypatch, logs=logs, metrics=metrics)
    try:
        assert isinstance(telemetry.meter_provider, SdkMeterProvider) == (metrics != "none")
        assert isinstance(telemetry.logger_provider, SdkLoggerProvider) == (logs != "none")
        assert (telemetry.log_handler in _otel_handlers()) == (logs != "none")
    finally:
        telemetry.shutdown()


def test_signals_with_an_exporter_get_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = _set_up(monkeypatch, logs="console", metrics="console")
    try:
        assert isinstance(telemetry.meter_provider, SdkMeterProvider)
        assert isinstance(telemetry.logger_provider, SdkLoggerProvider)
        assert telemetry.log_handler in _otel_handlers()
    finally:
        telemetry.shutdown()
    assert telemetry.log_handler not in _otel_handlers()
