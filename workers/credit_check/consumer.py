"""AMQP glue for the credit check: parse, decide, reply, announce, then ack.

The ack comes last, after the database commit and after the reply and the event were published
(with publisher confirms): a crash anywhere before it means a redelivery, never a loss, and the
store's idempotency key means a redelivery never charges twice.
"""

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from messaging import instrumentation, topology
from messaging.dead_letter import dead_letter
from messaging.messages import CONTENT_TYPE, InvalidMessage, ReservationRequested
from workers.credit_check.handler import Decision, Ledger, check_credit

log = structlog.get_logger(__name__)

# A reservation request is ~150 bytes; anything far larger is not one of ours.
MAX_BODY_BYTES = 16 * 1024


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
        span = trace.get_current_span()
        try:
            request = parse(message)
        except InvalidMessage as exc:
            span.set_attribute("reservation.outcome", "dead_lettered")
            log.warning(
                "dead-lettering poison message", reason=str(exc), message_id=message.message_id
            )
            await dead_letter(self._dlx, message, str(exc), queue=topology.CREDIT_CHECK.name)
            return
        try:
            decision = await check_credit(request, self._ledger)
            _annotate(span, decision)
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
                    _persistent(decision.event.to_body(), str(request.reservation_id)),
                    topology.RESERVATION_CONFIRMED,
                    mandatory=True,
                )
            await message.ack()
        except Exception as exc:
            # A real failure: on the span, in the log, and back to the queue. The quorum
            # queue's delivery limit dead-letters it after DELIVERY_LIMIT attempts.
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__qualname__)
            log.exception(
                "credit check failed; the message will be redelivered",
                reservation_id=str(request.reservation_id),
            )
            await message.nack(requeue=True)

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


def parse(message: AbstractIncomingMessage) -> ReservationRequested:
    """Validate a delivery before anything else touches it; InvalidMessage means poison."""
    if message.content_type != CONTENT_TYPE:
        raise InvalidMessage(f"content type {message.content_type!r}, expected {CONTENT_TYPE}")
    if len(message.body) > MAX_BODY_BYTES:
        raise InvalidMessage(f"body of {len(message.body)} bytes exceeds {MAX_BODY_BYTES}")
    return ReservationRequested.from_body(message.body)


def _persistent(body: bytes, message_id: str) -> aio_pika.Message:
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
