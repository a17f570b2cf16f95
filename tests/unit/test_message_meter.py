"""The meter on the publish and consume path: attributes by the conventions, the reply-to
template instead of a per-request name, error.type on failure, and no dependence on spans."""

from collections.abc import Iterator

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from messaging import metered
from messaging.metered import MessageMeter
from messaging.metrics import MessagingMetrics


@pytest.fixture
def recorded() -> Iterator[tuple[MessageMeter, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield MessageMeter(MessagingMetrics(provider), "127.0.0.1", 5672), reader
    provider.shutdown()


def _counts(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, object], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(p.attributes or {}), p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
        if isinstance(p, NumberDataPoint)
    ]


def test_a_publish_is_counted_with_its_destination_and_the_broker(
    recorded: tuple[MessageMeter, InMemoryMetricReader],
) -> None:
    meter, reader = recorded
    for _ in range(3):
        with meter.sending("reservations", "reservation.requested"):
            pass
    with pytest.raises(ConnectionError), meter.sending("reservations", "reservation.requested"):
        raise ConnectionError

    counts = _counts(reader, "messaging.client.sent.messages")
    base = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": "reservations:reservation.requested",
        "server.address": "127.0.0.1",
        "server.port": 5672,
    }
    assert sorted(counts, key=lambda c: c[1]) == [
        ({**base, "error.type": "ConnectionError"}, 1),
        (base, 3),
    ]


def test_replies_are_counted_under_the_template_never_a_per_request_name(
    recorded: tuple[MessageMeter, InMemoryMetricReader],
) -> None:
    meter, reader = recorded
    for suffix in ("g1h2AA5yZXBseT", "g1h2AA5yZXBseU"):
        with meter.sending("", f"amq.rabbitmq.reply-to.{suffix}"):
            pass
    ((attributes, count),) = _counts(reader, "messaging.client.sent.messages")
    assert count == 2
    assert attributes["messaging.destination.template"] == "amq.rabbitmq.reply-to"
    assert "messaging.destination.name" not in attributes


def test_a_failed_delivery_is_consumed_with_its_error_type(
    recorded: tuple[MessageMeter, InMemoryMetricReader],
) -> None:
    meter, reader = recorded
    queue, exchange, key = "credit-check", "reservations", "reservation.requested"
    with meter.processing(queue, exchange, key):
        pass
    with meter.processing(queue, exchange, key):
        metered.failed("OperationalError")  # what messaging.delivery reports, then requeues
    with meter.processing(queue, exchange, key):
        pass  # the next delivery starts afresh

    counts = _counts(reader, "messaging.client.consumed.messages")
    by_error = {attributes.get("error.type"): count for attributes, count in counts}
    assert by_error == {None: 2, "OperationalError": 1}
    attributes = counts[0][0]
    assert (
        attributes["messaging.destination.name"]
        == "reservations:reservation.requested:credit-check"
    )
    assert attributes["messaging.operation.type"] == "process"


def test_with_metrics_off_a_meter_does_no_work_and_lets_failures_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The no-op provider of OTEL_SDK_DISABLED or OTEL_METRICS_EXPORTER=none: no clock, no
    destination, no attribute set per message (8 µs a message before), failures unchanged."""

    def unexpected(*_: object) -> tuple[str, bool]:
        raise AssertionError("a meter with metrics off worked out a destination")

    monkeypatch.setattr(metered, "destination", unexpected)
    meter = MessageMeter(MessagingMetrics(NoOpMeterProvider()), "127.0.0.1", 5672)
    assert not meter.metrics.recording
    with meter.sending("reservations", "reservation.requested"):
        pass
    with meter.processing("credit-check", "reservations", "reservation.requested"):
        metered.failed("ValueError")  # no delivery to mark: harmless
    with pytest.raises(ConnectionError), meter.sending("reservations", "reservation.requested"):
        raise ConnectionError
    with (
        pytest.raises(ValueError),
        meter.processing("credit-check", "reservations", "reservation.requested"),
    ):
        raise ValueError
