"""Dead-lettering on purpose, with a reason a person can read.

A poison message (bad JSON, wrong schema, unknown version, wrong content type, too big) would
fail the same way on every redelivery, so it must not be requeued. ``basic.reject`` would
dead-letter it, but without saying why; instead the worker republishes it to the dead-letter
exchange with an ``x-dead-letter-reason`` header and then acks the original. The republish is a
PRODUCER span inside the consumer span, so the poisoned message stays in the same trace.
"""

import asyncio

import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError, PublishError

from messaging import instrumentation
from messaging.envelope import copy_of
from messaging.metered import NO_METER, MessageMeter
from messaging.topology import (
    DEAD_LETTER_REASON,
    DECLARE_WITHIN,
    ORIGINAL_ROUTING_KEY,
    declare_dead_letters,
)

log = structlog.get_logger(__name__)

MAX_REASON_LENGTH = 256


async def dead_letter(
    dlx: AbstractExchange,
    message: AbstractIncomingMessage,
    reason: str,
    *,
    queue: str,
    meter: MessageMeter = NO_METER,
) -> None:
    """Republish ``message`` to the dead-letter exchange with ``reason``, then ack it."""
    _ = message.channel  # raises if the delivery's channel is gone: no copy (messaging.retry)
    # The broker's delivery bookkeeping must not follow the message, nor its attempt count:
    # replayed from the dead-letter queue, it starts again at its first attempt.
    headers = {DEAD_LETTER_REASON: reason[:MAX_REASON_LENGTH], "x-original-queue": queue}
    copy = copy_of(message, headers, reply_to=False)
    routing_key = str(copy.headers[ORIGINAL_ROUTING_KEY]) or queue
    try:
        await instrumentation.publish(dlx, copy, routing_key, mandatory=True, meter=meter)
    except PublishError as exc:
        # Returned as unroutable: the dead-letter queue or its binding is gone. A fault
        # campaign deleted the queue, and its dead letters were lost, every one, until the
        # services restarted. Declared again, the copy goes once more. (A nack, from a full
        # dead-letter queue say, is not this: it goes to the caller as it is.)
        log.warning(
            "dead letter returned unroutable; declaring the dead-letter queue again",
            error=repr(exc),
        )
        try:
            async with asyncio.timeout(DECLARE_WITHIN):
                await declare_dead_letters(message.channel.connection)
        except (AMQPError, TimeoutError, *CONNECTION_EXCEPTIONS) as declaring:
            log.warning("could not declare the dead-letter queue", error=repr(declaring))
        await instrumentation.publish(dlx, copy, routing_key, mandatory=True, meter=meter)
    await message.ack()
