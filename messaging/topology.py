"""The broker topology, described once and declared by every service.

RabbitMQ refuses a re-declare with different arguments (406 PRECONDITION_FAILED), so two
hand-kept copies of a queue's arguments would eventually break. Declaring is idempotent: each
service declares everything it touches at start-up, in any order, as often as it likes.

- ``reservations`` (topic): ``reservation.requested`` -> ``credit-check``,
  ``reservation.confirmed`` -> ``fulfilment``.
- ``credit-check`` and ``fulfilment`` are quorum queues (replicated, and they count
  deliveries). Workers dead-letter a message themselves after ``messaging.delivery.MAX_ATTEMPTS``
  failures; the queue's ``x-delivery-limit`` is the broker-side backstop. Dead letters go to
  ``reservations.dlx``, which routes everything to ``reservations.dead-letter``.

Changing a queue's arguments here needs the old queue deleted first (RabbitMQ answers 406).
"""

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq.abc
import aiormq.exceptions
from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

RESERVATION_REQUESTED = "reservation.requested"
RESERVATION_CONFIRMED = "reservation.confirmed"
# RabbitMQ's direct reply-to pseudo-queue: replies reach the channel that asked, no queue needed.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Returns of one copy of a message (its worker killed or cut off while holding it) before the
# broker dead-letters it: the backstop for a message that kills its worker (messaging.retry).
DELIVERY_LIMIT = 5
# Header a worker sets on a message it dead-letters on purpose, saying why.
DEAD_LETTER_REASON = "x-dead-letter-reason"
# Header of a message a worker publishes again after its handler failed: the attempt it is
# (messaging.retry); absent, the first.
ATTEMPT_HEADER = "x-attempt"
# Header of a message a worker publishes again: how often its earlier copies went back to the
# queue unsettled, which the broker counted against DELIVERY_LIMIT (messaging.retry).
RETURNED_HEADER = "x-returned"
# Seconds a declaration or binding may take, once a message came back unroutable.
DECLARE_WITHIN = 5.0
# Headers of a retried or dead-lettered message: where it was first published.
ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY = "x-original-exchange", "x-original-routing-key"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType = ExchangeType.TOPIC


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: ExchangeSpec
    routing_keys: tuple[str, ...]
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Where a message is published: an exchange and a routing key."""

    exchange: ExchangeSpec
    routing_key: str


RESERVATIONS = ExchangeSpec("reservations")
DEAD_LETTER_EXCHANGE = ExchangeSpec("reservations.dlx")

_WORK_QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
    "x-delivery-limit": DELIVERY_LIMIT,
}

CREDIT_CHECK = QueueSpec(
    "credit-check", RESERVATIONS, (RESERVATION_REQUESTED,), _WORK_QUEUE_ARGUMENTS
)
FULFILMENT = QueueSpec("fulfilment", RESERVATIONS, (RESERVATION_CONFIRMED,), _WORK_QUEUE_ARGUMENTS)
DEAD_LETTERS = QueueSpec(
    "reservations.dead-letter", DEAD_LETTER_EXCHANGE, ("#",), {"x-queue-type": "quorum"}
)

RESERVATION_REQUESTS = Route(RESERVATIONS, RESERVATION_REQUESTED)
RESERVATION_CONFIRMATIONS = Route(RESERVATIONS, RESERVATION_CONFIRMED)

QUEUES = (CREDIT_CHECK, FULFILMENT, DEAD_LETTERS)


@dataclass(frozen=True)
class Declared:
    exchanges: Mapping[str, AbstractExchange]
    queues: Mapping[str, AbstractQueue]


async def declare(channel: AbstractChannel, queues: Sequence[QueueSpec] = QUEUES) -> Declared:
    """Declare every exchange, queue and binding (or only ``queues``, with the exchanges they
    are bound to). Safe to call repeatedly and concurrently. aio-pika's robust channel declares
    again what was declared on it, whenever it opens again: a worker's consuming channel
    declares only its own queue (:meth:`messaging.broker.Broker.open`)."""
    exchanges = {
        spec.name: await channel.declare_exchange(spec.name, spec.type, durable=True)
        for spec in dict.fromkeys(queue.exchange for queue in queues)
    }
    declared: dict[str, AbstractQueue] = {}
    for spec in queues:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=dict(spec.arguments))
        for key in spec.routing_keys:
            await queue.bind(exchanges[spec.exchange.name], routing_key=key)
        declared[spec.name] = queue
    return Declared(exchanges, declared)


@contextlib.asynccontextmanager
async def channel_apart(
    connection: aiormq.abc.AbstractConnection,
) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A short-lived AMQP channel of its own on ``connection``, closed after use unless the
    broker closed it: what the broker refuses there (a 404 for a queue that is not there, a
    406 for one declared with other arguments) closes it, not a channel with publishes or
    deliveries in flight; and what aio-pika's robust channels restore after a reconnect is
    left as :func:`declare` made it."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()


def routes_into(spec: QueueSpec) -> tuple[Route, ...]:
    """The routes the topology binds ``spec`` by."""
    return tuple(Route(spec.exchange, key) for key in spec.routing_keys)


def queues_of(route: Route) -> tuple[QueueSpec, ...]:
    """The queues the topology binds to ``route``'s exchange by its routing key (work queues
    are bound by exact keys)."""
    return tuple(
        spec
        for spec in QUEUES
        if spec.exchange == route.exchange and route.routing_key in spec.routing_keys
    )


async def declare_dead_letters(connection: aiormq.abc.AbstractConnection) -> None:
    """Declare the dead-letter exchange and queue, and bind them, once more: an operator may
    have deleted one, RabbitMQ drops a dead letter it cannot route, and nothing else declares
    them again while the service runs. On a channel apart (:func:`channel_apart`)."""
    async with channel_apart(connection) as channel:
        await channel.exchange_declare(
            DEAD_LETTER_EXCHANGE.name, exchange_type=DEAD_LETTER_EXCHANGE.type.value, durable=True
        )
        await channel.queue_declare(
            DEAD_LETTERS.name, durable=True, arguments=dict(DEAD_LETTERS.arguments)
        )
        for key in DEAD_LETTERS.routing_keys:
            await channel.queue_bind(DEAD_LETTERS.name, DEAD_LETTER_EXCHANGE.name, routing_key=key)


async def bind_route(connection: aiormq.abc.AbstractConnection, route: Route) -> tuple[str, ...]:
    """Bind ``route``'s queues (:func:`queues_of`) to it once more, those that exist; returns
    the names of those that do not. A message published to the route came back unroutable: an
    operator deleted a binding, or a channel restoring the topology after the exchange was
    deleted has not bound the queue yet. A queue that is gone is left so: the worker consuming
    it declares it again (aio-pika does, for a consumer the broker cancelled), and one deleted
    on purpose, or by an ``expires`` policy, stays deleted rather than take messages nobody
    will read. Each queue on a channel apart (:func:`channel_apart`): a queue that is not there
    closes it."""
    missing = []
    for spec in queues_of(route):
        try:
            async with channel_apart(connection) as channel:
                await channel.queue_declare(spec.name, passive=True)
                await channel.queue_bind(
                    spec.name, route.exchange.name, routing_key=route.routing_key
                )
        except aiormq.exceptions.ChannelNotFoundEntity:
            missing.append(spec.name)
    return tuple(missing)
