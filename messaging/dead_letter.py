"""Dead-lettering on purpose, with a reason a person can read.

A poison message (bad JSON, wrong schema, unknown version, wrong content type, too big) would
fail the same way on every redelivery, so it must not be requeued. ``basic.reject`` would
dead-letter it, but without saying why; instead the worker republishes it to the dead-letter
exchange with an ``x-dead-letter-reason`` header and then acks the original. The republish is a
PRODUCER span inside the consumer span, so the poisoned message stays in the same trace.
"""

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from messaging import instrumentation
from messaging.envelope import envelope
from messaging.metered import NO_METER, MessageMeter
from messaging.topology import DEAD_LETTER_REASON

MAX_REASON_LENGTH = 256
_BROKER_HEADERS = {
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
}


async def dead_letter(
    dlx: AbstractExchange,
    message: AbstractIncomingMessage,
    reason: str,
    *,
    queue: str,
    meter: MessageMeter = NO_METER,
) -> None:
    """Republish ``message`` to the dead-letter exchange with ``reason``, then ack it."""
    # The broker's delivery bookkeeping must not follow the message: replayed from the
    # dead-letter queue, it starts again at its first attempt.
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS}
    headers[DEAD_LETTER_REASON] = reason[:MAX_REASON_LENGTH]
    headers["x-original-queue"] = queue
    headers["x-original-exchange"] = message.exchange or ""
    await instrumentation.publish(
        dlx,
        envelope(
            message.body,
            persistent=True,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            message_type=message.type,
        ),
        message.routing_key or queue,
        mandatory=True,
        meter=meter,
    )
    await message.ack()
