"""The edge filter for incoming W3C trace headers (pure ASGI, no server needed)."""

from typing import Any

import pytest
from opentelemetry.trace import SpanContext

from api.edge import INCOMING_CONTEXT, MAX_BAGGAGE_BYTES, EdgeTrustMiddleware, parse_traceparent

VALID = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _seen(mode: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = EdgeTrustMiddleware(app, mode)  # type: ignore[arg-type]
    await middleware({"type": "http", "headers": headers}, None, None)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize(
    "value",
    [b"garbage", b"", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01", VALID + b"x" * 100],
)
def test_invalid_traceparent_is_rejected(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_valid_traceparent_parses() -> None:
    context = parse_traceparent(VALID)
    assert context is not None and context.is_remote
    assert format(context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


async def test_continue_mode_keeps_valid_and_drops_bad_or_oversized_headers() -> None:
    scope = await _seen(
        "continue",
        [
            (b"traceparent", VALID),
            (b"tracestate", b"k=" + b"v" * 1000),
            (b"baggage", b"a=" + b"b" * MAX_BAGGAGE_BYTES),
            (b"accept", b"*/*"),
        ],
    )
    assert scope["headers"] == [(b"traceparent", VALID), (b"accept", b"*/*")]
    assert INCOMING_CONTEXT not in scope["state"]


async def test_continue_mode_drops_a_garbage_traceparent() -> None:
    scope = await _seen("continue", [(b"traceparent", b"nonsense"), (b"baggage", b"a=b")])
    assert scope["headers"] == [(b"baggage", b"a=b")]


async def test_link_mode_strips_the_context_and_keeps_it_for_a_link() -> None:
    scope = await _seen(
        "link", [(b"traceparent", VALID), (b"tracestate", b"k=v"), (b"baggage", b"a=b")]
    )
    assert scope["headers"] == []
    incoming = scope["state"][INCOMING_CONTEXT]
    assert isinstance(incoming, SpanContext)
    assert format(incoming.span_id, "016x") == "b7ad6b7169203331"
