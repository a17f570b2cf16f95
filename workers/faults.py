"""Test-only crash points, for proving that a killed worker loses nothing and charges nothing
twice. ``WORKER_CRASH_AT=<point>`` makes the worker SIGKILL itself at that point, on a
message's first delivery only, so the worker that takes the redelivery can finish it. Unset
(as everywhere outside the reliability tests) every call here does nothing.

- ``mid_transaction``: credits deducted, reservation not yet committed;
- ``after_commit``: committed, no reply or event published yet;
- ``after_reply``: reply and event published, message not yet acked.
"""

import os
import signal
from contextvars import ContextVar
from typing import Literal, get_args

import structlog
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.reservations import Reservation
from store.repository import SqlStore

log = structlog.get_logger(__name__)

CrashPoint = Literal["mid_transaction", "after_commit", "after_reply"]
POINTS: tuple[str, ...] = get_args(CrashPoint)

_armed_at: CrashPoint | None = None
_first_delivery: ContextVar[bool] = ContextVar("first_delivery", default=False)


def arm(point: CrashPoint | None) -> None:
    global _armed_at
    _armed_at = point
    if point is not None:
        log.warning("crash point armed: this worker will SIGKILL itself", point=point)


def delivering(message: AbstractIncomingMessage) -> None:
    """Called as each delivery starts; crash points fire only on first deliveries."""
    _first_delivery.set(not message.redelivered)


def crash_point(point: CrashPoint) -> None:
    if _armed_at == point and _first_delivery.get():
        log.warning("crash point reached: SIGKILL", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingStore(SqlStore):
    """The store with the ``mid_transaction`` crash point inside reserve()'s transaction."""

    async def _record(self, conn: AsyncConnection, reservation: Reservation) -> None:
        crash_point("mid_transaction")
        await super()._record(conn, reservation)
