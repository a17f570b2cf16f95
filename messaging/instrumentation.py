"""Messaging spans that follow the current OpenTelemetry semantic conventions for RabbitMQ.

We keep ``opentelemetry-instrumentation-aio-pika``: it wraps ``Exchange.publish`` (a PRODUCER
span that injects ``traceparent`` into the AMQP headers) and ``Queue.consume`` (a CONSUMER span
parented on the context extracted from those headers). That parent link is what makes one trace
out of the hops, and what Tempo's service graph pairs producer and consumer spans by.

Its 0.66b1 release still names spans ``"exchange,routing_key send"`` (per-request for direct
reply-to) and writes deprecated attributes (``messaging.destination``, ``net.peer.name``,
``messaging.operation=receive``). Rather than rewrite finished spans, we hand the instrumentor a
tracer provider that upgrades name and attributes *as the span starts*, after the rules in
:mod:`messaging.semconv`.

What the instrumentor cannot see (the queue, the delivery tag, the body size) is added by
:func:`publish` and :func:`consumer`, the only ways this project publishes and consumes.
"""

from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractMessage
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider
from opentelemetry.util.types import Attributes

from messaging import propagation, semconv
from messaging.metered import NO_METER, MessageMeter
from messaging.semconv import destination
from messaging.telemetry.span_rewriting import RewritingTracer, RewritingTracerProvider


class _SemconvTracer(RewritingTracer):
    def rewrite(self, name: str, kind: SpanKind, attributes: Attributes) -> tuple[str, Attributes]:
        return semconv.upgrade(name, kind, attributes)


class SemconvTracerProvider(RewritingTracerProvider):
    """Wraps a real provider; its tracers upgrade every span they start. Give it only to the
    aio-pika instrumentor."""

    def __init__(self, delegate: TracerProvider) -> None:
        super().__init__(delegate, _SemconvTracer)


async def publish(
    exchange: AbstractExchange,
    message: AbstractMessage,
    routing_key: str,
    *,
    mandatory: bool,
    meter: MessageMeter = NO_METER,
) -> None:
    """Publish through the instrumented ``Exchange.publish``, letting its span see the size;
    ``meter`` counts and times it, sampled or not."""
    token = semconv.outgoing_body_size.set(len(message.body))
    try:
        with meter.sending(exchange.name, routing_key):
            await exchange.publish(message, routing_key, mandatory=mandatory)
    finally:
        semconv.outgoing_body_size.reset(token)


# The CONSUMER span's event when trace headers were present but not usable (not strings, or
# too long); the span then starts a new trace instead of continuing the sender's.
UNUSABLE_CONTEXT = "messaging.trace_context.unusable"

# An aio-pika consumer callback (the transport level; handlers of models are messaging.handlers).
OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


def consumer(queue: str, callback: OnMessage, meter: MessageMeter = NO_METER) -> OnMessage:
    """Wrap a consumer callback so the CONSUMER span (already current, started by the
    instrumentation) gets its full destination, delivery tag and body size, and ``meter``
    counts and times every delivery, sampled or not."""

    async def enriched(message: AbstractIncomingMessage) -> None:
        exchange, routing_key = message.exchange or "", message.routing_key or ""
        if unusable := propagation.unusable_fields(message.headers):
            # Extraction ignored them: the CONSUMER span started a fresh trace; say why.
            trace.get_current_span().add_event(
                UNUSABLE_CONTEXT, {"messaging.header.names": unusable}
            )
        span = trace.get_current_span()
        if span.is_recording():
            dest, anonymous = destination(exchange, routing_key, queue)
            span.update_name(f"process {dest}")
            span.set_attributes(semconv.process_attributes(message, dest, anonymous))
        with meter.processing(queue, exchange, routing_key):
            await callback(message)

    return enriched
