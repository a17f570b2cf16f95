"""A message whose handler found the database unreachable waits, in flight, until it is back.

Each failure counts towards the delivery's attempts (``messaging.delivery.MAX_ATTEMPTS``), a
fraction of a second apart: a database restart would use them all up and park requests in the
dead-letter queue that nothing was wrong with. So when a handler fails because the database,
not the statement, failed (:func:`store.availability.database_gone`), the failure is held
until the database answers again, for at most :data:`HOLD_AT_MOST` seconds, and only then
handed on: the retry that follows finds the database back. The last attempt is not held: it
is dead-lettered either way. The held messages of a worker wait on one shared probe, which
:meth:`DatabaseOutage.close` ends when the worker stops: they are then left unsettled, and
the broker gives them to another consumer. So is a message whose handler finds the database
gone after that, while the stopping worker finishes what it had in flight: on any attempt,
since nothing is wrong with the message.
"""

import asyncio
import contextvars
import time

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.delivery import MAX_ATTEMPTS, current_delivery
from messaging.handlers import Handled, Handler, M
from store.availability import database_gone, until_reachable

log = structlog.get_logger(__name__)
# Seconds a failed message is held while the database does not answer.
HOLD_AT_MOST = 30.0
EVENT = "reservations.database.outage"


class Released(asyncio.CancelledError):
    """The worker is stopping during a database outage: the message goes back to the broker
    unsettled, as when the connection closes under a handler, and counts no attempt."""


class DatabaseOutage:
    """The one probe the held messages of a worker share."""

    def __init__(self, engine: AsyncEngine, within: float = HOLD_AT_MOST) -> None:
        self._engine = engine
        self._within = within
        self._probe: asyncio.Task[bool] | None = None
        self._closed = False

    async def back(self) -> bool:
        """True once the database answers; False after the bound, if the probe failed, or at
        once after :meth:`close`."""
        if self._closed:
            return False
        if self._probe is None or self._probe.done():
            # A context of its own: the probe belongs to no request's trace.
            self._probe = asyncio.get_running_loop().create_task(
                self._probing(), context=contextvars.Context()
            )
        try:
            return await asyncio.shield(self._probe)
        except Exception as exc:  # the handler's own failure is what counts, not the probe's
            log.warning("database probe failed", error=repr(exc))
            return False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop probing: the messages held now are released unsettled (CancelledError), and
        none is held from now on."""
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()

    async def _probing(self) -> bool:
        with suppress_instrumentation():  # no span for each SELECT 1
            return await until_reachable(self._engine, self._within)


def held_through(outage: DatabaseOutage, handler: Handler[M]) -> Handler[M]:
    """``handler``, whose failures for an unreachable database wait for ``outage`` to end
    (but on the last attempt), or are :class:`Released` once it is closed."""

    async def handle(message: M) -> Handled | None:
        try:
            return await handler(message)
        except Exception as exc:
            if not database_gone(exc):
                raise
            if outage.closed:
                log.warning(
                    "database unavailable while stopping; releasing the message", error=repr(exc)
                )
                raise Released from exc
            if current_delivery().attempt >= MAX_ATTEMPTS:
                raise
            started = time.monotonic()
            log.warning("database unavailable; holding the message until it answers")
            back = await outage.back()
            trace.get_current_span().add_event(
                EVENT, {"back": back, "waited_s": round(time.monotonic() - started, 3)}
            )
            raise

    return handle
