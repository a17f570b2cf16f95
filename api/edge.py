"""Edge trust for W3C Trace Context: what an incoming request's trace headers may do.

The API faces clients it does not control. Per the W3C Trace Context security considerations,
it decides whether to *continue* a caller's trace or to *start a new root and link* to it, and
it never lets a malformed or oversized ``traceparent``, ``tracestate`` or ``baggage`` reach the
propagators, and from there the AMQP headers of every message the request causes.

This middleware must run before the OpenTelemetry ASGI middleware extracts the context, so the
lifespan installs it *outside* the instrumented stack (see :func:`wrap_outermost`).
"""

import re
from collections.abc import Callable
from typing import Literal

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags
from starlette.types import ASGIApp, Receive, Scope, Send

TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
MAX_TRACESTATE_BYTES = 512  # W3C: vendors may drop tracestate beyond 512 characters
MAX_BAGGAGE_BYTES = 1024  # far below the propagator's 8192: every message would carry it
INCOMING_CONTEXT = "incoming_trace_context"

Mode = Literal["continue", "link"]


def parse_traceparent(value: bytes) -> SpanContext | None:
    match = TRACEPARENT.match(value.strip().lower())
    if match is None or set(match[1]) == {ord("0")} or set(match[2]) == {ord("0")}:
        return None
    return SpanContext(
        int(match[1], 16),
        int(match[2], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match[3], 16)),
    )


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
        state = dict(scope.get("state") or {})
        if incoming is not None and self.mode == "link":
            state[INCOMING_CONTEXT] = incoming
        return {**scope, "headers": headers, "state": state}


def link_incoming(scope: Scope) -> None:
    """In link mode, link the request's (new root) server span to the caller's context."""
    incoming = (scope.get("state") or {}).get(INCOMING_CONTEXT)
    if isinstance(incoming, SpanContext):
        trace.get_current_span().add_link(incoming, {"link.reason": "untrusted caller"})


def wrap_outermost(build: Callable[[], ASGIApp], mode: Mode) -> Callable[[], ASGIApp]:
    """Wrap a ``build_middleware_stack`` so the edge filter runs before everything else."""

    def build_with_edge() -> ASGIApp:
        return EdgeTrustMiddleware(build(), mode)

    return build_with_edge
