"""Messaging spans: names and attributes follow the current conventions; patches are real."""

import aio_pika
import pytest
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from messaging.instrumentation import SemconvTracerProvider
from messaging.semconv import destination, upgrade
from tests.spans import aio_pika_traced_by, in_memory_provider

LEGACY_PRODUCER: dict[str, AttributeValue] = {
    "messaging.system": "rabbitmq",
    "messaging.destination": "reservations,reservation.requested",
    "net.peer.name": "127.0.0.1",
    "net.peer.port": 5672,
    "messaging.message.id": "r-1",
    "messaging.conversation_id": "c-1",
    "messaging.temp_destination": True,
}


@pytest.mark.parametrize(
    ("exchange", "routing_key", "queue", "expected"),
    [
        (
            "reservations",
            "reservation.requested",
            None,
            ("reservations:reservation.requested", False),
        ),
        (
            "reservations",
            "reservation.requested",
            "credit-check",
            ("reservations:reservation.requested:credit-check", False),
        ),
        ("", "some-queue", "some-queue", ("some-queue", False)),
        ("", "", None, ("amq.default", False)),
        (
            "",
            "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5NTAy.UeuW==",
            None,
            ("amq.rabbitmq.reply-to", True),
        ),
        ("", "amq.rabbitmq.reply-to.x", "amq.rabbitmq.reply-to", ("amq.rabbitmq.reply-to", True)),
    ],
)
def test_destination_rules(
    exchange: str, routing_key: str, queue: str | None, expected: tuple[str, bool]
) -> None:
    assert destination(exchange, routing_key, queue) == expected


def test_producer_upgrade_drops_deprecated_attributes() -> None:
    name, attributes = upgrade(
        "reservations,reservation.requested send", SpanKind.PRODUCER, LEGACY_PRODUCER
    )
    assert name == "publish reservations:reservation.requested"
    assert attributes == {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": "reservations:reservation.requested",
        "messaging.rabbitmq.destination.routing_key": "reservation.requested",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": "r-1",
        "messaging.message.conversation_id": "c-1",
        "server.address": "127.0.0.1",
        "server.port": 5672,
    }


def test_reply_publish_name_is_low_cardinality() -> None:
    legacy = {**LEGACY_PRODUCER, "messaging.destination": ",amq.rabbitmq.reply-to.g1h2AA==.Ue=="}
    name, attributes = upgrade("ignored", SpanKind.PRODUCER, legacy)
    assert name == "publish amq.rabbitmq.reply-to"
    assert attributes["messaging.destination.anonymous"] is True
    assert attributes["messaging.destination.temporary"] is True
    assert attributes["messaging.destination.template"] == "amq.rabbitmq.reply-to"


def test_tracer_provider_wrapper_starts_upgraded_spans() -> None:
    provider, exporter = in_memory_provider()
    tracer = SemconvTracerProvider(provider).get_tracer("opentelemetry.instrumentation.aio_pika")
    tracer.start_span("x,y send", kind=SpanKind.PRODUCER, attributes=LEGACY_PRODUCER).end()
    with tracer.start_as_current_span(
        "reservations receive",
        kind=SpanKind.CONSUMER,
        attributes={"messaging.destination": "reservations", "messaging.operation": "receive"},
    ):
        pass
    producer, consumer = exporter.get_finished_spans()
    assert producer.name == "publish reservations:reservation.requested"
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.name == "process reservations"
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert "messaging.operation" not in consumer.attributes


def test_aio_pika_is_really_patched() -> None:
    """On a version conflict, instrument() logs an error and patches nothing: catch that."""
    provider, _ = in_memory_provider()
    with aio_pika_traced_by(provider):
        assert hasattr(aio_pika.Queue.consume, "__wrapped__")
        assert hasattr(aio_pika.Exchange.publish, "__wrapped__")
    assert not hasattr(aio_pika.Queue.consume, "__wrapped__")
