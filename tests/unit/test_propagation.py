"""The propagator wrapper: garbage trace headers are ignored, good ones still continue."""

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.baggage import get_all
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from messaging.propagation import UsableContextPropagator, unusable_fields

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
GARBAGE: list[Any] = [42, 4.2, True, b"x", bytearray(b"x"), {"a": 1}, [TRACEPARENT], "x" * 10_240]

PROPAGATOR = UsableContextPropagator(
    CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
)


@pytest.mark.parametrize("field", ["traceparent", "tracestate", "baggage"])
@pytest.mark.parametrize("value", GARBAGE, ids=lambda v: type(v).__name__)
def test_garbage_is_ignored_and_named(field: str, value: Any) -> None:
    # The bare SDK propagators raise on some of these; the wrapper never does.
    context = PROPAGATOR.extract({field: value})
    assert not trace.get_current_span(context).get_span_context().is_valid
    assert get_all(context) == {}
    assert unusable_fields({field: value, "x-other": 1}) == [field]


def test_good_headers_still_continue_the_trace() -> None:
    context = PROPAGATOR.extract({"traceparent": TRACEPARENT, "baggage": "k=v", "tracestate": 7})
    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert get_all(context) == {"k": "v"}
    assert unusable_fields({"traceparent": TRACEPARENT, "baggage": "k=v"}) == []


def test_a_custom_getter_gets_only_strings() -> None:
    from opentelemetry.propagators.textmap import Getter

    class Pairs(Getter[list[tuple[str, Any]]]):
        def get(self, carrier: list[tuple[str, Any]], key: str) -> list[str] | None:
            return [v for k, v in carrier if k == key] or None

        def keys(self, carrier: list[tuple[str, Any]]) -> list[str]:
            return [k for k, _ in carrier]

    context = PROPAGATOR.extract(
        [("traceparent", 42), ("traceparent", TRACEPARENT)], getter=Pairs()
    )
    assert trace.get_current_span(context).get_span_context().is_valid
