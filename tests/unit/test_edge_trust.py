"""The edge filter for incoming W3C trace headers (pure ASGI, no server needed)."""

from typing import Any

import pytest
from opentelemetry.trace import SpanContext

from api.edge import (
    INCOMING_CONTEXT,
    MAX_BAGGAGE_BYTES,
    MAX_TRACEPARENT_BYTES,
    EdgeTrustMiddleware,
    parse_traceparent,
)

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


TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE}-{SPAN}-01".encode(),  # version ff is forbidden
        f"00-{TRACE}-{SPAN}-01-extra".encode(),  # version 00 has exactly four fields
        f"00-{TRACE.upper()}-{SPAN}-01".encode(),  # lowercase hex only
        f"cc-{TRACE}-{SPAN}-01-".encode() + b"x" * MAX_TRACEPARENT_BYTES,  # oversized
        f"00-{TRACE}-{SPAN}-01".encode().replace(b"-", b"\xe2\x80\x93", 1),  # not ASCII
    ],
)
def test_traceparent_outside_the_spec_or_the_size_limit_is_rejected(value: bytes) -> None:
    assert parse_traceparent(value) is None


@pytest.mark.parametrize("value", [f"cc-{TRACE}-{SPAN}-01-extra", f"cc-{TRACE}-{SPAN}-01"])
def test_a_future_traceparent_version_is_read_as_version_00(value: str) -> None:
    """W3C Trace Context: a higher version is parsed for the version 00 fields it starts with."""
    context = parse_traceparent(value.encode())
    assert context is not None and context.is_remote
    assert (format(context.trace_id, "032x"), format(context.span_id, "016x")) == (TRACE, SPAN)
    assert context.trace_flags.sampled


async def test_continue_mode_keeps_a_future_version_traceparent() -> None:
    future = f"cc-{TRACE}-{SPAN}-01-extra".encode()
    scope = await _seen("continue", [(b"traceparent", future)])
    assert scope["headers"] == [(b"traceparent", future)]


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
