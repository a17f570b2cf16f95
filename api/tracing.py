"""Trace ids at the HTTP edge: every response says which trace it belongs to.

Users paste the ``X-Trace-Id`` header (or the ``trace_id`` field) into Tempo. The middleware
is pure ASGI (no BaseHTTPMiddleware overhead) and runs inside the FastAPI instrumentation's
SERVER span, so the current span is the request's.
"""

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACE_ID_HEADER = b"x-trace-id"


def current_trace_id() -> str | None:
    """The current trace's id, or None outside a trace (JSON ``null``, as in the server's own
    400/408/431/503 bodies)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class TraceIdHeaderMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = (current_trace_id() or "").encode()

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start" and trace_id:
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (TRACE_ID_HEADER, trace_id)]
            await send(message)

        await self.app(scope, receive, send_with_trace_id)
