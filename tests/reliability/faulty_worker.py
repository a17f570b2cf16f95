"""The credit-check worker with a crash point: the entry point of the crash tests.

``python -m tests.reliability.faulty_worker <point>`` (or ``WORKER_CRASH_AT=<point>``, read only
here) runs the production wiring (``workers.credit_check``'s ``WORKER`` through
``workers.runtime.serve``) with its ports wrapped, and SIGKILLs itself at ``<point>``, on a
message's first delivery only, so the worker that takes the redelivery can finish it:

- ``mid_transaction``: credits deducted, reservation not yet recorded (inside the store's
  transaction, in the method that records the outcome);
- ``after_commit``: committed, no reply or event published yet (around the ledger);
- ``after_reply``: reply and event confirmed by the broker, message not yet acked (around the
  publisher).

Production code carries no crash points: everything test-only lives in this file.
"""

import os
import signal
import sys
from collections.abc import Callable
from typing import Literal, get_args
from uuid import UUID

import structlog
from aio_pika.abc import AbstractChannel
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.reservations import Reservation
from messaging.delivery import current_delivery
from messaging.handlers import Handled
from messaging.publisher import Publisher, ReplyAddress
from messaging.topology import Declared
from store.driver import StatementSpans
from store.repository import SqlStore
from workers.credit_check.__main__ import WORKER
from workers.runtime import run, serve

log = structlog.get_logger(__name__)

CrashPoint = Literal["mid_transaction", "after_commit", "after_reply"]
POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)


def crash_at(point: CrashPoint, armed: CrashPoint) -> None:
    """SIGKILL this process if ``point`` is the armed one and this is a first delivery."""
    if point == armed and not current_delivery().redelivered:
        log.warning("crash point reached: SIGKILL", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingStore(SqlStore):
    def __init__(self, engine: AsyncEngine, spans: StatementSpans, armed: CrashPoint) -> None:
        super().__init__(engine, spans)
        self._armed = armed
        log.warning("crash point armed: this worker will SIGKILL itself", point=armed)

    def _record(self, conn: Connection, reservation: Reservation) -> None:
        crash_at("mid_transaction", self._armed)
        super()._record(conn, reservation)

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        reservation = await super().reserve(reservation_id, username, item_id, trace_id)
        crash_at("after_commit", self._armed)
        return reservation


class CrashingPublisher(Publisher):
    def __init__(self, declared: Declared, channel: AbstractChannel, armed: CrashPoint) -> None:
        super().__init__(declared.exchanges, channel.default_exchange, channel=channel)
        self._armed = armed

    async def send(
        self,
        handled: Handled,
        reply_to: ReplyAddress | None,
        *,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        await super().send(handled, reply_to, wanted=wanted)
        crash_at("after_reply", self._armed)


def main() -> None:
    point = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WORKER_CRASH_AT", "")
    if point not in POINTS:
        sys.exit(f"usage: python -m tests.reliability.faulty_worker {{{'|'.join(POINTS)}}}")
    armed = point

    def publisher(channel: AbstractChannel, declared: Declared) -> Publisher:
        return CrashingPublisher(declared, channel, armed)

    run(
        lambda: serve(
            WORKER,
            store=lambda engine, spans: CrashingStore(engine, spans, armed),
            publisher=publisher,
        )
    )


if __name__ == "__main__":
    main()
