"""Retrying a delivery whose handler failed: a copy, with the next attempt number, at the back
of the same queue; then the original is acked.

``basic.reject`` with requeue would let RabbitMQ count the attempts (a quorum queue's
``x-delivery-count``), but before RabbitMQ 4.3 that counts every return of the message too: a
worker killed or stopped while holding it, a connection dropped. A few of those and one
database failure would dead-letter a request nothing was wrong with (a fault campaign did just
that, on 3.10). So the worker counts what it means by an attempt, a failure of the handler,
in the message's :data:`messaging.topology.ATTEMPT_HEADER`.

The queue's ``x-delivery-limit`` still counts the returns of each copy, and a copy returned
often enough is dead-lettered by the broker (``delivery_limit``), with no reason a person can
read: a review's database outage with eight connection drops, and six restarts of a worker
holding an event the broker refused, had it park charged reservations. So a delivery that has
come back :data:`RENEW_AFTER_RETURNS` times is renewed before it is handled: published again as
the same attempt, and acked, and the copy starts its count afresh. Each copy carries the
returns of the ones before it (:data:`messaging.topology.RETURNED_HEADER`), and a message
returned :data:`RETURNS_LIMIT` times in all is dead-lettered by the worker, saying so: the
backstop for a message that kills its worker, at four times the broker's.

Those counts are the worker's own, so they are read only where a worker wrote them: on a
delivery that came through the default exchange (a retry or a renewal, :func:`by_a_worker`),
and the broker's ``x-delivery-count`` only on a delivery the broker marked redelivered. Any
other publisher's headers count for nothing: a message published to the topic exchange with
``x-attempt: 3`` (a dead letter replayed with its headers, say) was dead-lettered at its
first failure, and one with ``x-returned: 20`` at its third return, charged or not.

The copy keeps the message's id, correlation id and reply-to address (the API may still be
waiting for the reply), and is published through the default exchange to this queue alone
(another queue bound to the same routing key has its own copy). Its publish is a PRODUCER
span inside the failed CONSUMER span, so the retry stays in the request's trace. It is
confirmed before the original is acked: a failure in between leaves two copies, never none,
and handlers are idempotent by the message's id.
"""

from typing import Any

from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from messaging import instrumentation
from messaging.envelope import copy_of
from messaging.metered import NO_METER, MessageMeter
from messaging.topology import ATTEMPT_HEADER, DELIVERY_LIMIT, RETURNED_HEADER

# Returns of one copy after which it is renewed: before the broker's limit, with room for a
# few more while it is being renewed.
RENEW_AFTER_RETURNS = DELIVERY_LIMIT - 2
# Returns of all the copies of a message after which the worker dead-letters it.
RETURNS_LIMIT = 4 * DELIVERY_LIMIT


def by_a_worker(message: AbstractIncomingMessage) -> bool:
    """Whether a worker published this delivery to its own queue (a retry or a renewal go
    through the default exchange; every other message of this project through its topic
    exchange), so its attempt and returns headers are the worker's."""
    return message.exchange == ""


def attempt_of(message: AbstractIncomingMessage) -> int:
    """Which attempt this delivery is: 1, unless a worker retried it (a header that is not a
    positive integer counts as the first)."""
    if not by_a_worker(message):
        return 1
    attempt = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return attempt if type(attempt) is int and attempt >= 1 else 1


def returns_of(message: AbstractIncomingMessage) -> tuple[int, int]:
    """How often this copy came back to its queue unsettled (the broker's count, which only
    a redelivery carries), and how often the message did in all, its earlier copies' returns
    included (which only a worker's copy carries)."""
    headers = message.headers or {}
    this_copy = _count(headers.get("x-delivery-count")) if message.redelivered else 0
    earlier = _count(headers.get(RETURNED_HEADER)) if by_a_worker(message) else 0
    return this_copy, this_copy + earlier


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


async def retry(
    default_exchange: AbstractExchange,
    message: AbstractIncomingMessage,
    *,
    queue: str,
    meter: MessageMeter = NO_METER,
    counted: bool = True,
) -> None:
    """Publish ``message`` again to ``queue`` as its next attempt (as the same attempt, if not
    ``counted``: :class:`messaging.handlers.NotAnAttempt`), then ack it."""
    # Raises if the delivery's channel is gone (a reconnect during the back-off): no copy is
    # made, and the broker redelivers the original. A copy published on the new channel
    # could not be followed by the ack, and there would be two.
    _ = message.channel
    attempt = attempt_of(message) + (1 if counted else 0)
    _, returned = returns_of(message)
    headers = {ATTEMPT_HEADER: attempt, **({RETURNED_HEADER: returned} if returned else {})}
    copy = copy_of(message, headers, reply_to=True)
    await instrumentation.publish(default_exchange, copy, queue, mandatory=True, meter=meter)
    await message.ack()
