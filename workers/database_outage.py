"""A message whose handler found the database unreachable waits, in flight, until it is back.

Each failure counts towards the delivery's attempts (``messaging.delivery.MAX_ATTEMPTS``), a
fraction of a second apart: a database restart would use them all up and park requests in the
dead-letter queue that nothing was wrong with. So when a handler fails because the database,
not the statement, failed (:func:`store.availability.database_gone`), the failure is held
until the database answers again, for at most :data:`HOLD_AT_MOST` seconds, and only then
handed on: the retry that follows finds the database back. A database that did not answer
within the bound makes the failure a :class:`~messaging.handlers.NotAnAttempt`: the message
goes back to its queue as the same attempt, to be held again, for as long as the outage lasts
(until round twenty-three it counted, and an outage past about a minute dead-lettered every
message in flight). The held messages of a worker wait on one shared probe, which
:meth:`DatabaseOutage.close` ends when the worker stops: they are then left unsettled, and
the broker gives them to another consumer. So is a message whose handler finds the database
gone after that, while the stopping worker finishes what it had in flight: on any attempt,
since nothing is wrong with the message.

A database that answers the probe at once may still be unable to do the work: a row or table
lock held by another session (the transaction runs out of ``DATABASE_TRANSACTION_TIMEOUT``),
SQLite's file locked past its busy timeout, a full disk, a full pool
(:func:`store.availability.database_busy`). Held only until the probe answered, three attempts
took some 15 s, and a lock held for 20 s dead-lettered every request that met it (a fault
campaign). So from the second attempt on, such a failure is held for three quarters of
:data:`BUSY_PAUSE` seconds to all of it from when it happened (spread, so that the messages
that failed together on one hot row do not all come back together), however soon the probe
answered, and is then no attempt either: the message goes back as its second attempt, to be
held again, for as long as the database stays busy. Counted, a review's PostgreSQL with a
50 ms ``statement_timeout`` under load dead-lettered 5 of 59 requests on their third attempt,
their 202 never decided. Not the first: a transaction that ran out of time
may have waited on a connection gone silent (after a fail-over, say), which is closed, and the
retry goes through at once on another. Nor a lost connection, which the pool replaces. How
soon the probe answered cannot tell a lock from a server that went away: the probe takes a
connection from the same pool, which the transactions waiting on the lock fill (a first
version that paused only after a probe answered within a second still dead-lettered requests
under a 40 s lock). A server that went away and comes back within the pause costs a message
on its second attempt the rest of the pause: later, never lost.
"""

import asyncio
import contextlib
import contextvars
import random
import time

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.delivery import current_delivery
from messaging.handlers import Handled, Handler, M, NotAnAttempt
from store.availability import database_busy, database_gone, until_reachable

log = structlog.get_logger(__name__)
# Seconds a failed message is held while the database does not answer (the default of
# DATABASE_OUTAGE_HOLD).
HOLD_AT_MOST = 30.0
# Seconds, from the failure, a message is held at least when the database answered but could
# not do the work (busy, locked, full), from its second attempt on (DATABASE_BUSY_PAUSE).
BUSY_PAUSE = 30.0
EVENT = "reservations.database.outage"


class Released(asyncio.CancelledError):
    """The worker is stopping during a database outage: the message goes back to the broker
    unsettled, as when the connection closes under a handler, and counts no attempt."""


class DatabaseOutage:
    """The one probe the held messages of a worker share."""

    def __init__(
        self, engine: AsyncEngine, within: float = HOLD_AT_MOST, busy_pause: float = BUSY_PAUSE
    ) -> None:
        self._engine = engine
        self._within = within
        self.busy_pause = busy_pause
        self._probe: asyncio.Task[bool] | None = None
        self._closed = asyncio.Event()

    @property
    def within(self) -> float:
        return self._within

    async def back(self) -> bool | None:
        """True once the database answers; False if it did not within the bound; None if the
        probe itself failed, or at once after :meth:`close`."""
        if self._closed.is_set():
            return None
        if self._probe is None or self._probe.done():
            # A context of its own: the probe belongs to no request's trace.
            self._probe = asyncio.get_running_loop().create_task(
                self._probing(), context=contextvars.Context()
            )
        try:
            return await asyncio.shield(self._probe)
        except Exception as exc:  # the handler's own failure is what counts, not the probe's
            log.warning("database probe failed", error=repr(exc))
            return None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until :meth:`close`: then :class:`Released`."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), seconds)
        if self._closed.is_set():
            raise Released("the worker is stopping")

    def close(self) -> None:
        """Stop probing: the messages held now are released unsettled (CancelledError), and
        none is held from now on."""
        self._closed.set()
        if self._probe is not None:
            self._probe.cancel()

    async def _probing(self) -> bool:
        with suppress_instrumentation():  # no span for each SELECT 1
            return await until_reachable(self._engine, self._within)


def held_through(outage: DatabaseOutage, handler: Handler[M]) -> Handler[M]:
    """``handler``, whose failures for an unreachable database wait for ``outage`` to end, are
    not an attempt if it did not, or are :class:`Released` once it is closed."""

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
            started = time.monotonic()
            log.warning("database unavailable; holding the message until it answers")
            back = await outage.back()
            paused = back and current_delivery().attempt > 1 and database_busy(exc)
            if paused:
                # Spread: the messages that failed together on one hot row (a DBA's
                # statement_timeout under load) would otherwise all come back together.
                left = started + outage.busy_pause * random.uniform(0.75, 1) - time.monotonic()
                if left > 0:
                    await outage.pause(left)
            trace.get_current_span().add_event(
                EVENT, {"back": back is True, "waited_s": round(time.monotonic() - started, 3)}
            )
            if back is False:  # unreachable all along: the outage's failure, not the message's
                raise NotAnAttempt(
                    f"the database did not answer within {outage.within:g} s"
                ) from exc
            if paused:  # busy, not the message's fault: held again, never parked
                raise NotAnAttempt(
                    f"the database answered but could not do the work ({type(exc).__name__})"
                ) from exc
            raise

    return handle
