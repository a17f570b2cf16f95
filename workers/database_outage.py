"""A message whose handler found the database unreachable waits, in flight, until it is back.

Each failure counts towards the delivery's attempts (``messaging.delivery.MAX_ATTEMPTS``), a
fraction of a second apart: a database restart would use them all up and park requests in the
dead-letter queue that nothing was wrong with. So when a handler fails because the database,
not the statement, failed (:func:`store.engine.database_gone`), the failure is held until the
database answers again, for at most :data:`HOLD_AT_MOST` seconds, and only then handed on: the
retry that follows finds the database back. The messages of one worker wait on one shared probe.
"""

import asyncio
import time

import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.handlers import Handled, Handler, M
from store.engine import database_gone, until_reachable

log = structlog.get_logger(__name__)
# Seconds a failed message is held while the database does not answer.
HOLD_AT_MOST = 30.0


class DatabaseOutage:
    """The one probe the held messages of a worker share."""

    def __init__(self, engine: AsyncEngine, within: float | None = None) -> None:
        self._engine = engine
        self._within = HOLD_AT_MOST if within is None else within
        self._probe: asyncio.Future[bool] | None = None

    async def back(self) -> bool:
        """True once the database answers; False after the bound."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(until_reachable(self._engine, self._within))
        return await asyncio.shield(self._probe)


def held_through(outage: DatabaseOutage, handler: Handler[M]) -> Handler[M]:
    """``handler``, whose failures for an unreachable database wait for ``outage`` to end."""

    async def handle(message: M) -> Handled | None:
        try:
            return await handler(message)
        except Exception as exc:
            if not database_gone(exc):
                raise
            started = time.monotonic()
            log.warning("database unavailable; holding the message until it answers")
            back = await outage.back()
            trace.get_current_span().add_event(
                "database outage waited out" if back else "database still unavailable",
                {"waited_s": round(time.monotonic() - started, 3)},
            )
            raise

    return handle
