"""Edge trust for W3C Trace Context: what an incoming request's trace headers may do.

The API faces clients it does not control. Per the W3C Trace Context security considerations,
it decides whether to *continue* a caller's trace or to *start a new root and link* to it, and
it never lets a malformed or oversized ``traceparent``, ``tracestate`` or ``baggage`` reach the
propagators, and from there the AMQP headers of every message the request causes.

This middleware must run before the OpenTelemetry ASGI middleware extracts the context, so the
lifespan installs it *outside* the instrumented stack (see :func:`wrap_outermost`).
"""

from collections.abc import Callable
from typing import Literal

from opentelemetry import trace
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from messaging.propagation import MAX_CHARS

# The bounds every service applies to trace headers (messaging/propagation.py), but a tighter
# one for baggage from outside: every message the request causes would carry it.
MAX_TRACEPARENT_BYTES = MAX_CHARS["traceparent"]
MAX_TRACESTATE_BYTES = MAX_CHARS["tracestate"]
MAX_BAGGAGE_BYTES = 1024
INCOMING_CONTEXT = "incoming_trace_context"
# The SDK's parser follows the spec: a higher version is read as version 00 plus fields it
# ignores, version ff and all-zero ids are refused.
_TRACE_CONTEXT = TraceContextTextMapPropagator()

Mode = Literal["continue", "link"]


def parse_traceparent(value: bytes) -> SpanContext | None:
    """The caller's span context, or None when the header is malformed or oversized."""
    if len(value) > MAX_TRACEPARENT_BYTES:
        return None
    try:
        header = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    context = _TRACE_CONTEXT.extract({"traceparent": header})
    incoming = trace.get_current_span(context).get_span_context()
    return incoming if incoming.is_valid else None


class EdgeTrustMiddleware:
    def __init__(self, app: ASGIApp, mode: Mode) -> None:
        self.app = app
        self.mode = mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self._filter(scope)
        await self.app(scope, receive, send)

    def _filter(self, scope: Scope) -> Scope:
        headers: list[tuple[bytes, bytes]] = []
        incoming: SpanContext | None = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                incoming = parse_traceparent(value)
                if incoming is None or self.mode == "link":
                    continue
            elif name == b"tracestate":
                if self.mode == "link" or len(value) > MAX_TRACESTATE_BYTES:
                    continue
            elif name == b"baggage":
                if self.mode == "link" or len(value) > MAX_BAGGAGE_BYTES:
                    continue
            headers.append((name, value))
        # The request's state is shared, not copied: the server reads what the route leaves
        # there (api.http_protocol.answer_if_cut_short).
        state = scope.get("state")
        if state is None:
            state = {}
        if incoming is not None and self.mode == "link":
            state[INCOMING_CONTEXT] = incoming
        return {**scope, "headers": headers, "state": state}


def link_incoming(span: Span, scope: Scope) -> None:
    """The FastAPI instrumentation's ``server_request_hook``, called as the SERVER span
    starts: in link mode, link that (new root) span to the caller's context. And
    ``server.address`` as the stable HTTP conventions define it, the host without the port
    (``server.port`` carries that): the pinned ASGI instrumentation (0.66b1) writes the
    socket's ``host:port``, ``127.0.0.1:8081`` (a new user's find). The socket's host, not the
    ``Host`` header's: no value a client chooses."""
    incoming = (scope.get("state") or {}).get(INCOMING_CONTEXT)
    if isinstance(incoming, SpanContext):
        span.add_link(incoming, {"link.reason": "untrusted caller"})
    written = getattr(span, "attributes", None) or {}
    server = scope.get("server")
    if SERVER_ADDRESS in written and server:
        span.set_attribute(SERVER_ADDRESS, str(server[0]))


def wrap_outermost(build: Callable[[], ASGIApp], mode: Mode) -> Callable[[], ASGIApp]:
    """Wrap a ``build_middleware_stack`` so the edge filter runs before everything else."""

    def build_with_edge() -> ASGIApp:
        return EdgeTrustMiddleware(build(), mode)

    return build_with_edge
