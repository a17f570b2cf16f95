"""The messaging metrics instruments: semconv names, units, bucket advice and attributes."""

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)

from messaging.metrics import DURATION_BUCKETS, MessagingMetrics, attributes

SEND = attributes("publish", "send", "reservations:reservation.requested")
PROCESS = attributes("process", "process", "reservations:reservation.requested:credit-check")


@pytest.fixture
def recorded() -> Iterator[tuple[MessagingMetrics, InMemoryMetricReader]]:
    """The instruments, on a per-test provider whose reader collects in memory."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield MessagingMetrics(provider), reader
    provider.shutdown()


def _collected(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


def test_sent_and_processed_record_the_four_semconv_metrics(
    recorded: tuple[MessagingMetrics, InMemoryMetricReader],
) -> None:
    metrics, reader = recorded
    metrics.sent(0.004, SEND)
    metrics.sent(0.2, SEND)
    metrics.processed(0.03, PROCESS)

    found = _collected(reader)
    assert {name: m.unit for name, m in found.items()} == {
        "messaging.client.operation.duration": "s",
        "messaging.client.sent.messages": "{message}",
        "messaging.process.duration": "s",
        "messaging.client.consumed.messages": "{message}",
    }
    (operation,) = found["messaging.client.operation.duration"].data.data_points
    assert isinstance(operation, HistogramDataPoint)
    assert tuple(operation.explicit_bounds) == DURATION_BUCKETS
    assert operation.count == 2 and dict(operation.attributes or {}) == SEND
    (sent,) = found["messaging.client.sent.messages"].data.data_points
    assert isinstance(sent, NumberDataPoint) and sent.value == 2
    (processed,) = found["messaging.process.duration"].data.data_points
    assert isinstance(processed, HistogramDataPoint)
    assert tuple(processed.explicit_bounds) == DURATION_BUCKETS
    assert processed.count == 1 and dict(processed.attributes or {}) == PROCESS
    (consumed,) = found["messaging.client.consumed.messages"].data.data_points
    assert isinstance(consumed, NumberDataPoint) and consumed.value == 1


def test_attributes_follow_the_conventions() -> None:
    assert SEND == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": "reservations:reservation.requested",
    }
    reply = attributes(
        "publish",
        "send",
        "amq.rabbitmq.reply-to.g1h2",
        template="amq.rabbitmq.reply-to",
        error_type="BrokerUnavailable",
        server_address="rabbitmq",
        server_port=5672,
    )
    # An anonymous destination is given by its template only: low-cardinality series.
    assert "messaging.destination.name" not in reply
    assert reply["messaging.destination.template"] == "amq.rabbitmq.reply-to"
    assert (reply["error.type"], reply["server.address"], reply["server.port"]) == (
        "BrokerUnavailable",
        "rabbitmq",
        5672,
    )
