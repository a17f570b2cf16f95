"""Reading traces the test receiver caught: waiting for them and walking their tree."""

from collections.abc import Iterable

from cli.collector import SpanStore
from cli.spans import SpanRecord
from devtools.span_tree import walk

API = "reservations-api"
CREDIT_CHECK = "credit-check-worker"
FULFILMENT = "fulfilment-worker"

REQUEST_PUBLISH = "publish reservations:reservation.requested"
REQUEST_PROCESS = "process reservations:reservation.requested:credit-check"
REPLY_PUBLISH = "publish amq.rabbitmq.reply-to"
REPLY_PROCESS = "process amq.rabbitmq.reply-to"
CONFIRMED_PUBLISH = "publish reservations:reservation.confirmed"
CONFIRMED_PROCESS = "process reservations:reservation.confirmed:fulfilment"

# Required on every messaging span (semantic conventions for RabbitMQ).
MESSAGING_ATTRIBUTES = {
    "messaging.system",
    "messaging.destination.name",
    "messaging.operation.type",
    "messaging.operation.name",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.message.id",
    "messaging.message.body.size",
    "server.address",
    "server.port",
}


def wait_for_trace(
    store: SpanStore, trace_id: str, names: Iterable[str], within: float = 15
) -> list[SpanRecord]:
    wanted = set(names)
    store.wait_for(lambda s: wanted <= {span.name for span in s.trace(trace_id)}, within)
    spans = store.trace(trace_id)
    assert wanted <= {s.name for s in spans}, render(spans)
    return spans


def one(spans: list[SpanRecord], name: str, service: str, kind: str) -> SpanRecord:
    found = [s for s in spans if s.name == name and s.service == service]
    assert len(found) == 1, f"one {name!r} in {service} expected:\n{render(spans)}"
    assert found[0].kind == kind, render(spans)
    return found[0]


def ancestors(span: SpanRecord, spans: list[SpanRecord]) -> list[SpanRecord]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def children(span: SpanRecord, spans: list[SpanRecord]) -> list[SpanRecord]:
    return [s for s in spans if s.parent_span_id == span.span_id]


def render(spans: list[SpanRecord]) -> str:
    """A plain-text span tree, for assertion messages and the README."""
    return "\n".join(
        f"{'  ' * node.depth}{node.span.name}  ({node.span.kind}, {node.span.service})"
        + (" [ERROR]" if node.span.status == "ERROR" else "")
        for node in walk(spans)
    )
