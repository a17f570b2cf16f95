"""Recording the messaging metrics on the one publish path and the one consume path.

:func:`messaging.instrumentation.publish` and :func:`messaging.instrumentation.consumer` time
every message and hand the duration to a :class:`MessageMeter`, whether or not its span is
sampled: the counts stay exact at any sampling ratio (see :mod:`messaging.metrics`). The meter
carries the broker's address (``server.address``/``server.port``); the destination is the
span's low-cardinality one, with direct reply-to given as its template, never per request.
With metrics off (a no-op meter provider) a meter does nothing at all, not even read the clock.

A delivery's handler failure is caught by :mod:`messaging.delivery` (it retries or
dead-letters), so the consumer wrapper cannot see it raise: :func:`failed` tells it instead.
"""

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

from aio_pika import Connection
from aio_pika.abc import AbstractConnection
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.util.types import AttributeValue

from messaging.metrics import MessagingMetrics, attributes
from messaging.semconv import destination


@dataclass
class _Processing:
    """The delivery being processed: a mutable holder, so that a failure reported from a task
    the handling runs in (the subscriber shields it in one, with a copy of the context) still
    reaches the meter that records the delivery."""

    error_type: str | None = None


_processing: ContextVar[_Processing | None] = ContextVar("messaging_processing", default=None)
# What a meter whose metrics go nowhere (metrics off: a no-op provider) times a message with.
_UNMETERED: AbstractContextManager[None] = nullcontext()


def failed(error_type: str) -> None:
    """The delivery being processed in this context failed with ``error_type``."""
    current = _processing.get()
    if current is not None:
        current.error_type = error_type


@dataclass(frozen=True)
class MessageMeter:
    metrics: MessagingMetrics
    server_address: str | None = None
    server_port: int | None = None

    @classmethod
    def on(cls, metrics: MessagingMetrics, connection: AbstractConnection) -> "MessageMeter":
        """The broker's address is the connection's (a plain AbstractConnection has none)."""
        if not isinstance(connection, Connection):
            return cls(metrics)
        return cls(metrics, connection.url.host, connection.url.port)

    def sending(self, exchange: str, routing_key: str) -> AbstractContextManager[None]:
        """Time one publish (confirm included): sent messages and the operation duration.
        With metrics off, nothing: not even the clock or the attributes."""
        if not self.metrics.recording:
            return _UNMETERED
        return self._timed_sending(exchange, routing_key)

    def processing(
        self, queue: str, exchange: str, routing_key: str
    ) -> AbstractContextManager[None]:
        """Time one delivery's processing: consumed messages and the process duration. With
        metrics off, nothing (and :func:`failed` has no delivery to mark)."""
        if not self.metrics.recording:
            return _UNMETERED
        return self._timed_processing(queue, exchange, routing_key)

    @contextmanager
    def _timed_sending(self, exchange: str, routing_key: str) -> Iterator[None]:
        error_type = None
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            dest, anonymous = destination(exchange, routing_key)
            attrs = self._attributes("publish", "send", dest, anonymous, error_type)
            self.metrics.sent(time.perf_counter() - start, attrs)

    @contextmanager
    def _timed_processing(self, queue: str, exchange: str, routing_key: str) -> Iterator[None]:
        state = _Processing()
        token = _processing.set(state)
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            state.error_type = type(exc).__qualname__
            raise
        finally:
            dest, anonymous = destination(exchange, routing_key, queue)
            attrs = self._attributes("process", "process", dest, anonymous, state.error_type)
            self.metrics.processed(time.perf_counter() - start, attrs)
            _processing.reset(token)

    def _attributes(
        self, name: str, kind: str, dest: str, anonymous: bool, error_type: str | None
    ) -> dict[str, AttributeValue]:
        return _cached(
            name, kind, dest, anonymous, error_type, self.server_address, self.server_port
        )


@lru_cache(maxsize=256)
def _cached(
    name: str,
    kind: str,
    dest: str,
    anonymous: bool,
    error_type: str | None,
    server_address: str | None,
    server_port: int | None,
) -> dict[str, AttributeValue]:
    """One attribute set per destination and outcome, built once (never mutated after)."""
    return attributes(
        name,
        kind,
        dest,
        template=dest if anonymous else None,
        error_type=error_type,
        server_address=server_address,
        server_port=server_port,
    )


NO_METER = MessageMeter(MessagingMetrics(NoOpMeterProvider()))
