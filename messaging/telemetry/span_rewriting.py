"""Tracers that rewrite the spans an instrumentation starts, as it starts them.

Two contrib instrumentations write names and attributes of older conventions: aio-pika
(:mod:`messaging.instrumentation`) and SQLAlchemy (:mod:`messaging.telemetry.db_spans`). Rather than
rewrite finished spans in an exporter, each gets a tracer provider of its own whose tracers
rename the span and translate its attributes before the SDK records them. This module is the
shared plumbing; each rewriter overrides :meth:`RewritingTracer.rewrite`, where attributes
arrive after the start :meth:`RewritingTracer.wrap`, and :meth:`RewritingTracer.drops` for a
span that tells a reader nothing.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer, TracerProvider
from opentelemetry.util.types import Attributes


class RewritingTracer(Tracer):
    """Starts spans on a real tracer, after :meth:`rewrite` and wrapped by :meth:`wrap`."""

    def __init__(self, delegate: Tracer) -> None:
        self._delegate = delegate

    def drops(self, name: str) -> bool:
        """True for a span not worth recording: the caller gets a non-recording stand-in."""
        return False

    def rewrite(self, name: str, kind: SpanKind, attributes: Attributes) -> tuple[str, Attributes]:
        """The name and attributes the span starts with."""
        return name, attributes

    def wrap(self, span: Span, attributes: Attributes) -> Span:
        """The span handed back to the instrumentation (given the original attributes)."""
        return span

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
        if self.drops(name):
            return trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())
        new_name, new_attributes = self.rewrite(name, kind, attributes)
        span = self._delegate.start_span(
            new_name, context, kind, new_attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        return self.wrap(span, attributes)

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
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as s:
            yield s


class RewritingTracerProvider(TracerProvider):
    """Wraps a real provider; give it to one instrumentor only."""

    def __init__(self, delegate: TracerProvider, tracer: Callable[[Tracer], Tracer]) -> None:
        self._delegate = delegate
        self._tracer = tracer

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return self._tracer(self._delegate.get_tracer(*args, **kwargs))
