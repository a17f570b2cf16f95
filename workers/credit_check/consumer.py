"""AMQP glue for the credit check: parse, decide, reply, announce, then ack.

The ack comes last (see ``workers.delivery``), after the database commit and after the reply
and the event were published with publisher confirms: a crash anywhere before it means a
redelivery, never a loss, and the store's idempotency key means a redelivery never charges twice.
"""

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from opentelemetry import trace

from messaging import instrumentation, topology
from messaging.messages import CONTENT_TYPE, ReservationRequested
from workers import delivery, faults
from workers.credit_check.handler import Decision, Ledger, check_credit

log = structlog.get_logger(__name__)


class CreditCheckConsumer:
    def __init__(
        self,
        ledger: Ledger,
        exchange: AbstractExchange,
        default_exchange: AbstractExchange,
        dead_letter_exchange: AbstractExchange,
    ) -> None:
        self._ledger = ledger
        self._exchange = exchange
        self._default_exchange = default_exchange
        self._dlx = dead_letter_exchange

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        """Handle one ``reservation.requested`` delivery."""
        await delivery.handle(
            message,
            ReservationRequested,
            self._process,
            dead_letter_exchange=self._dlx,
            queue=topology.CREDIT_CHECK.name,
        )

    async def _process(
        self, request: ReservationRequested, message: AbstractIncomingMessage
    ) -> None:
        log.info("reservation received", reservation_id=str(request.reservation_id))
        decision = await check_credit(request, self._ledger)
        faults.crash_point("after_commit")
        _annotate(trace.get_current_span(), decision)
        log.info(
            "credit checked",
            reservation_id=str(request.reservation_id),
            outcome=decision.reply.outcome.value,
            credits_left=decision.reply.credits_left,
            replayed=decision.reservation.replayed,
        )
        await self._reply(message, decision)
        if decision.event is not None:
            await instrumentation.publish(
                self._exchange,
                persistent(decision.event.to_body(), str(request.reservation_id)),
                topology.RESERVATION_CONFIRMED,
                mandatory=True,
            )
            log.info("announced confirmation", reservation_id=str(request.reservation_id))
        faults.crash_point("after_reply")

    async def _reply(self, message: AbstractIncomingMessage, decision: Decision) -> None:
        if not message.reply_to:
            return
        # Direct reply-to is at-most-once: if the asking API is gone, the reply is dropped and
        # the API's GET /reservations/{id} reads the stored outcome instead.
        reply = aio_pika.Message(
            decision.reply.to_body(),
            content_type=CONTENT_TYPE,
            correlation_id=message.correlation_id,
            message_id=str(decision.reply.reservation_id),
            headers={},
        )
        await instrumentation.publish(
            self._default_exchange, reply, message.reply_to, mandatory=False
        )
        log.info("replied", reservation_id=str(decision.reply.reservation_id))


def persistent(body: bytes, message_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        headers={},
    )


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
