"""AMQP glue for fulfilment: parse, prepare the download, ack."""

import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from opentelemetry import trace

from messaging import topology
from messaging.messages import ReservationConfirmed
from workers import delivery
from workers.fulfilment.handler import Downloads, prepare_download

log = structlog.get_logger(__name__)


class FulfilmentConsumer:
    def __init__(self, downloads: Downloads, dead_letter_exchange: AbstractExchange) -> None:
        self._downloads = downloads
        self._dlx = dead_letter_exchange

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        """Handle one ``reservation.confirmed`` delivery."""
        await delivery.handle(
            message,
            ReservationConfirmed,
            self._process,
            dead_letter_exchange=self._dlx,
            queue=topology.FULFILMENT.name,
        )

    async def _process(self, event: ReservationConfirmed, _: AbstractIncomingMessage) -> None:
        reservation = await prepare_download(event, self._downloads)
        trace.get_current_span().set_attributes(
            {"reservation.id": str(event.reservation_id), "reservation.outcome": "fulfilled"}
        )
        log.info(
            "download ready",
            reservation_id=str(event.reservation_id),
            item_id=event.item_id,
            ready_at=reservation.ready_at.isoformat() if reservation.ready_at else None,
        )
