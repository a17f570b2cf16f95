"""Messaging spans that follow the current OpenTelemetry semantic conventions for RabbitMQ.

We keep ``opentelemetry-instrumentation-aio-pika``: it wraps ``Exchange.publish`` (a PRODUCER
span that injects ``traceparent`` into the AMQP headers) and ``Queue.consume`` (a CONSUMER span
parented on the context extracted from those headers). That parent link is what makes one trace
out of the hops, and what Tempo's service graph pairs producer and consumer spans by.

Its 0.66b1 release still names spans ``"exchange,routing_key send"`` (per-request for direct
reply-to) and writes deprecated attributes (``messaging.destination``, ``net.peer.name``,
``messaging.operation=receive``). Rather than rewrite finished spans, we hand the instrumentor a
tracer provider that upgrades name and attributes *as the span starts*:

- ``publish <destination>`` / ``process <destination>``, where a direct reply-to routing key
  becomes the fixed template ``amq.rabbitmq.reply-to``;
- ``messaging.destination.name`` = ``exchange:routing_key`` (send) or
  ``exchange:routing_key:queue`` (process), plus operation, message and server attributes.

What the instrumentor cannot see (the queue, the delivery tag, the body size) is added by
:func:`publish` and :func:`consumer`, the only ways this project publishes and consumes.
"""

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractMessage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer, TracerProvider
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
_outgoing_body_size: ContextVar[int | None] = ContextVar("outgoing_body_size", default=None)


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
        body_size = _outgoing_body_size.get()
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
        upgraded |= _ANONYMOUS
    return f"{operation} {dest}", upgraded


_ANONYMOUS: dict[str, AttributeValue] = {
    "messaging.destination.template": DIRECT_REPLY_TO,
    "messaging.destination.temporary": True,
    "messaging.destination.anonymous": True,
}


class SemconvTracerProvider(TracerProvider):
    """Wraps a real provider; its tracers upgrade every span they start. Give it only to the
    aio-pika instrumentor."""

    def __init__(self, delegate: TracerProvider) -> None:
        self._delegate = delegate

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return _SemconvTracer(self._delegate.get_tracer(*args, **kwargs))


class _SemconvTracer(Tracer):
    def __init__(self, delegate: Tracer) -> None:
        self._delegate = delegate

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        name, upgraded = upgrade(name, kind, attributes)
        return self._delegate.start_span(
            name,
            context,
            kind,
            upgraded,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as s:
            yield s


async def publish(
    exchange: AbstractExchange, message: AbstractMessage, routing_key: str, *, mandatory: bool
) -> None:
    """Publish through the instrumented ``Exchange.publish``, letting its span see the size."""
    token = _outgoing_body_size.set(len(message.body))
    try:
        await exchange.publish(message, routing_key, mandatory=mandatory)
    finally:
        _outgoing_body_size.reset(token)


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


def consumer(queue: str, handler: Handler) -> Handler:
    """Wrap a consumer callback so the CONSUMER span (already current, started by the
    instrumentation) gets its full destination, delivery tag and body size."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            dest, anonymous = destination(message.exchange or "", message.routing_key or "", queue)
            span.update_name(f"process {dest}")
            span.set_attributes(_process_attributes(message, dest, anonymous))
        await handler(message)

    return on_message


def _process_attributes(
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
        attributes |= _ANONYMOUS
    return attributes
