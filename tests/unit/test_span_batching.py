"""The span processor's export batch: ours by default, the standard variable when set."""

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from messaging.telemetry.providers import SPAN_EXPORT_BATCH_SIZE, setup_telemetry


def _batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    telemetry = setup_telemetry("batching-test", set_global=False)
    try:
        assert isinstance(telemetry.provider, TracerProvider)
        processors = telemetry.provider._active_span_processor._span_processors
        # The SDK keeps the size on its shared batch processor; there is no public getter.
        return [
            p._batch_processor._max_export_batch_size
            for p in processors
            if isinstance(p, BatchSpanProcessor)
        ]
    finally:
        telemetry.shutdown()


def test_spans_are_exported_in_small_batches_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    assert _batch_sizes(monkeypatch) == [SPAN_EXPORT_BATCH_SIZE]


def test_the_standard_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")
    assert _batch_sizes(monkeypatch) == [512]
    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")  # a batch never exceeds the queue
    assert _batch_sizes(monkeypatch) == [64]
