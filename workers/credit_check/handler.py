"""The credit check: a request in, a reply (and, when confirmed, an event) out.

The store does the check and the deduction atomically (see ``store.repository``); this module
turns its answer into messages. ``messaging`` publishes them and acks the request only after
both are confirmed: a crash before that means a redelivery, never a loss, and the store's
idempotency key means a redelivery never charges twice. Unit tests drive it with a fake ledger.
"""

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import structlog
from opentelemetry import trace

from domain.reservations import Outcome, Reservation
from messaging.handlers import Handled, Handler, Publication
from messaging.messages import CreditChecked, ReservationConfirmed, ReservationRequested
from messaging.topology import RESERVATION_CONFIRMATIONS

log = structlog.get_logger(__name__)


class Ledger(Protocol):
    """The port the handler needs: an idempotent, atomic reserve."""

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation: ...


@dataclass(frozen=True)
class Decision:
    reservation: Reservation
    reply: CreditChecked
    # Published after every confirmed outcome, replays included: an event lost by a crash
    # between commit and publish is sent on redelivery (the fulfilment worker is idempotent).
    event: ReservationConfirmed | None


async def check_credit(request: ReservationRequested, ledger: Ledger) -> Decision:
    # The worker's CONSUMER span continues the API's trace: the request's trace, kept with it.
    span_context = trace.get_current_span().get_span_context()
    trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
    reservation = await ledger.reserve(
        request.reservation_id, request.username, request.item_id, trace_id
    )
    reply = CreditChecked(
        reservation_id=request.reservation_id,
        outcome=reservation.outcome,
        credits_left=reservation.credits_left,
        price=reservation.price,
    )
    if reservation.replayed and (reservation.username, reservation.item_id) != (
        request.username,
        request.item_id,
    ):
        log.warning(
            "a request repeats a reservation id for another user or item: answered and "
            "announced as the reservation it recorded",
            reservation_id=str(request.reservation_id),
            item_id=reservation.item_id,
            requested_item_id=request.item_id,
        )
    event = None
    if reservation.outcome is Outcome.CONFIRMED and reservation.price is not None:
        # The recorded reservation's, never the request's: a redelivery names the same, but
        # a request that reuses an id for something else must not announce that.
        event = ReservationConfirmed(
            reservation_id=reservation.reservation_id,
            username=reservation.username,
            item_id=reservation.item_id,
            price=reservation.price,
        )
    return Decision(reservation, reply, event)


def credit_check(ledger: Ledger) -> Handler[ReservationRequested]:
    """The worker's handler: check, annotate the CONSUMER span, answer and announce."""

    async def handle(request: ReservationRequested) -> Handled:
        log.debug("reservation received", reservation_id=str(request.reservation_id))
        decision = await check_credit(request, ledger)
        _annotate(trace.get_current_span(), decision)
        log.info(
            "credit checked",
            reservation_id=str(request.reservation_id),
            outcome=decision.reply.outcome.value,
            credits_left=decision.reply.credits_left,
            replayed=decision.reservation.replayed,
        )
        events: tuple[Publication, ...] = ()
        if decision.event is not None:
            events = (Publication(decision.event, RESERVATION_CONFIRMATIONS),)
        return Handled(reply=decision.reply, events=events)

    return handle


def _annotate(span: trace.Span, decision: Decision) -> None:
    """Business attributes. The username is left out on purpose: it identifies a person."""
    span.set_attributes(
        {
            "reservation.id": str(decision.reply.reservation_id),
            "reservation.outcome": decision.reply.outcome.value,
            "reservation.replayed": decision.reservation.replayed,
            "reservation.item_id": decision.reservation.item_id,
        }
    )
    if decision.reply.credits_left is not None:
        span.set_attribute("user.credits_left", decision.reply.credits_left)
