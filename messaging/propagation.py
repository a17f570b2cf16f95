"""Trace-context extraction that garbage headers cannot break.

AMQP headers are typed: anyone who can publish can send ``traceparent: 42``, a byte array, a
table, a list or a 10 KB string. The contrib aio-pika instrumentation calls
``propagate.extract(message.headers)`` *before* any of our code runs, and the SDK's propagators
assume strings: an int raised ``TypeError`` there, the consumer callback failed, and the
delivery was never settled. So every process installs, once, a global propagator that hands
the real one only string values of a sane length; whatever else arrives is ignored, the
consumer starts a fresh trace, and :func:`unusable_fields` lets the CONSUMER span say why.
"""

from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

import structlog
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    DefaultGetter,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

log = structlog.get_logger(__name__)

# The longest value each field may have (W3C: a version-00 traceparent is 55 characters,
# vendors may drop tracestate beyond 512, baggage is capped at 8192 bytes).
MAX_CHARS = {"traceparent": 256, "tracestate": 512, "baggage": 8192}
DEFAULT_MAX_CHARS = 8192
TRACE_FIELDS = tuple(MAX_CHARS)


def usable(value: object, key: str) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= MAX_CHARS.get(key, DEFAULT_MAX_CHARS)


def unusable_fields(headers: Mapping[str, Any] | None) -> list[str]:
    """The trace-context headers present in ``headers`` that extraction had to ignore."""
    if not headers:
        return []
    return [key for key in TRACE_FIELDS if key in headers and not usable(headers[key], key)]


class _UsableValues(Getter[CarrierT]):
    """A getter that yields only string values of a sane length."""

    def __init__(self, inner: Getter[CarrierT]) -> None:
        self._inner = inner

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        if isinstance(self._inner, DefaultGetter) and isinstance(carrier, Mapping):
            # The default getter turns 42 into [42] and b"..." into a list of ints: judge the
            # raw value instead (a list is not a traceparent either).
            raw = carrier.get(key)
            return [raw] if usable(raw, key) else None
        values: Iterable[object] = self._inner.get(carrier, key) or ()
        kept = [value for value in values if usable(value, key)]
        return kept or None

    def keys(self, carrier: CarrierT) -> list[str]:
        return self._inner.keys(carrier)


class UsableContextPropagator(TextMapPropagator):
    """Wraps the configured propagator; extraction only ever sees usable values."""

    def __init__(self, delegate: TextMapPropagator) -> None:
        self.delegate = delegate

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        try:
            return self.delegate.extract(carrier, context, getter=_UsableValues(getter))
        except (TypeError, ValueError, AttributeError) as exc:
            # A value we judged usable still broke a propagator: start a fresh trace rather
            # than fail the delivery or request that carried it.
            log.warning("unusable trace context ignored", error=type(exc).__name__)
            return context if context is not None else Context()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        self.delegate.inject(carrier, context, setter=setter)

    @property
    def fields(self) -> set[str]:
        return self.delegate.fields


def install() -> None:
    """Wrap the global propagator (once; calling again changes nothing)."""
    current = propagate.get_global_textmap()
    if not isinstance(current, UsableContextPropagator):
        propagate.set_global_textmap(UsableContextPropagator(current))
