"""The credit check itself, free of AMQP: a request in, a reply (and maybe an event) out.

The store does the check and the deduction atomically (see ``store.repository``); this module
turns its answer into messages. Unit tests drive it with a fake ledger.
"""

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from domain.reservations import Outcome, Reservation
from messaging.messages import CreditChecked, ReservationConfirmed, ReservationRequested


class Ledger(Protocol):
    """The port the handler needs: an idempotent, atomic reserve."""

    async def reserve(self, reservation_id: UUID, username: str, item_id: str) -> Reservation: ...


@dataclass(frozen=True)
class Decision:
    reservation: Reservation
    reply: CreditChecked
    # Published after every confirmed outcome, replays included: an event lost by a crash
    # between commit and publish is sent on redelivery (the fulfilment worker is idempotent).
    event: ReservationConfirmed | None


async def check_credit(request: ReservationRequested, ledger: Ledger) -> Decision:
    reservation = await ledger.reserve(request.reservation_id, request.username, request.item_id)
    reply = CreditChecked(
        reservation_id=request.reservation_id,
        outcome=reservation.outcome,
        credits_left=reservation.credits_left,
        price=reservation.price,
    )
    event = None
    if reservation.outcome is Outcome.CONFIRMED and reservation.price is not None:
        event = ReservationConfirmed(
            reservation_id=request.reservation_id,
            username=request.username,
            item_id=request.item_id,
            price=reservation.price,
        )
    return Decision(reservation, reply, event)
