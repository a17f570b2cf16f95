"""Preparing a download for a confirmed reservation, free of AMQP."""

import secrets
from typing import Protocol
from uuid import UUID

import structlog
from opentelemetry import trace

from domain.reservations import Reservation
from messaging.handlers import Handler
from messaging.messages import ReservationConfirmed

tracer = trace.get_tracer(__name__)
log = structlog.get_logger(__name__)


class UnknownReservation(LookupError):
    """The event names a reservation the store does not hold as confirmed."""


class Downloads(Protocol):
    async def prepare_download(self, reservation_id: UUID, token: str) -> Reservation | None: ...


async def prepare_download(event: ReservationConfirmed, downloads: Downloads) -> Reservation:
    """Record a download token for the reservation; idempotent (the first token stays)."""
    with tracer.start_as_current_span(
        "prepare download", attributes={"reservation.id": str(event.reservation_id)}
    ):
        reservation = await downloads.prepare_download(
            event.reservation_id, secrets.token_urlsafe(24)
        )
    if reservation is None:
        raise UnknownReservation(f"no confirmed reservation {event.reservation_id}")
    return reservation


def fulfil(downloads: Downloads) -> Handler[ReservationConfirmed]:
    """The worker's handler: prepare the download; nothing to reply or announce."""

    async def handle(event: ReservationConfirmed) -> None:
        reservation = await prepare_download(event, downloads)
        trace.get_current_span().set_attributes(
            {"reservation.id": str(event.reservation_id), "reservation.outcome": "fulfilled"}
        )
        log.info(
            "download ready",
            reservation_id=str(event.reservation_id),
            item_id=event.item_id,
            ready_at=reservation.ready_at.isoformat() if reservation.ready_at else None,
        )

    return handle
