"""Names and attributes of messaging spans, after the current OpenTelemetry semantic
conventions for RabbitMQ.

- ``publish <destination>`` / ``process <destination>``, where a direct reply-to routing key
  becomes the fixed template ``amq.rabbitmq.reply-to`` (span names stay low-cardinality);
- ``messaging.destination.name`` = ``exchange:routing_key`` (send) or
  ``exchange:routing_key:queue`` (process), plus operation, message and server attributes;
- the legacy keys the contrib aio-pika instrumentation writes, renamed to their current ones.

Pure functions of a span's name and attributes: :mod:`messaging.instrumentation` applies them.
"""

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes, AttributeValue

from messaging.topology import DIRECT_REPLY_TO

SYSTEM = "rabbitmq"

# The legacy keys the contrib instrumentation writes, and what replaces each of them.
_RENAMED = {
    "messaging.message.id": "messaging.message.id",  # already current; kept as is
    "messaging.conversation_id": "messaging.message.conversation_id",
    "net.peer.name": "server.address",
    "net.peer.port": "server.port",
}

# Body size of the message being published, read when its PRODUCER span starts.
outgoing_body_size: ContextVar[int | None] = ContextVar("outgoing_body_size", default=None)


def destination(exchange: str, routing_key: str, queue: str | None = None) -> tuple[str, bool]:
    """The RabbitMQ destination name and whether it is anonymous (direct reply-to).

    Span names use this value, so anonymous reply routing keys collapse to their template.
    """
    # The contrib consumer passes a reply's routing key where the exchange goes: check all three.
    anonymous = any(p.startswith(DIRECT_REPLY_TO) for p in (exchange, routing_key, queue or ""))
    if anonymous:
        return DIRECT_REPLY_TO, True
    parts = [exchange, routing_key] + ([queue] if queue and queue != routing_key else [])
    return ":".join(p for p in parts if p) or "amq.default", False


def upgrade(name: str, kind: SpanKind, attributes: Attributes) -> tuple[str, dict[str, Any]]:
    """Translate a contrib aio-pika span's name and attributes to the current conventions."""
    legacy = dict(attributes or {})
    upgraded: dict[str, Any] = {"messaging.system": SYSTEM}
    upgraded.update({new: legacy[old] for old, new in _RENAMED.items() if old in legacy})
    if kind is SpanKind.PRODUCER:
        exchange, _, routing_key = str(legacy.get("messaging.destination", "")).partition(",")
        dest, anonymous = destination(exchange, routing_key)
        upgraded |= {"messaging.operation.type": "send", "messaging.operation.name": "publish"}
        if routing_key:
            upgraded["messaging.rabbitmq.destination.routing_key"] = routing_key
        body_size = outgoing_body_size.get()
        if body_size is not None:
            upgraded["messaging.message.body.size"] = body_size
        operation = "publish"
    else:
        # The consumer side only knows the exchange here; consumer() completes it.
        dest, anonymous = destination(str(legacy.get("messaging.destination", "")), "")
        upgraded |= {"messaging.operation.type": "process", "messaging.operation.name": "process"}
        operation = "process"
    upgraded["messaging.destination.name"] = dest
    if anonymous:
        upgraded |= ANONYMOUS
    return f"{operation} {dest}", upgraded


ANONYMOUS: dict[str, AttributeValue] = {
    "messaging.destination.template": DIRECT_REPLY_TO,
    "messaging.destination.temporary": True,
    "messaging.destination.anonymous": True,
}


def process_attributes(
    message: AbstractIncomingMessage, dest: str, anonymous: bool
) -> Mapping[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "messaging.destination.name": dest,
        "messaging.message.body.size": len(message.body),
    }
    if message.routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = message.routing_key
    if message.delivery_tag is not None:
        attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
    if anonymous:
        attributes |= ANONYMOUS
    return attributes
