"""What a message handler is: a function from a validated message model to what it caused.

A handler never sees AMQP. It returns a :class:`Handled`: the reply to send back to the asker
(if the request asked for one) and the events to announce. :func:`messaging.subscriber.subscribe`
publishes all of them, with publisher confirms, before it acks the delivery; so a crash before
the ack means a redelivery, never a lost reply or event.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from messaging.messages import Message
from messaging.topology import Route

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Publication:
    """An event to publish: a message model and its route."""

    message: Message
    to: Route


@dataclass(frozen=True)
class Handled:
    """What handling a message produced; published before the ack."""

    reply: Message | None = None
    events: tuple[Publication, ...] = ()


class NotAnAttempt(Exception):
    """Handling failed for a reason outside the message, which lasted: its database
    unreachable all the while it was waited for (:mod:`workers.database_outage`), or the
    broker refusing what it produced for the whole hold (:mod:`messaging.publisher`). The
    message is retried as the same attempt: one nothing was wrong with must not use up its
    attempts and be dead-lettered for an outage, however long. The error it stands for is
    its ``__cause__``."""


# A handler: the validated message in, what it produced out (None: nothing to publish).
Handler = Callable[[M], Awaitable[Handled | None]]
