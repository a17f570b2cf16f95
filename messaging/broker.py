"""The typed surface of the broker: publish a model, subscribe a handler, call and await a reply.

A :class:`Broker` is one channel with publisher confirms and the whole topology declared on it
(see :mod:`messaging.topology`). Callers deal in message models and topology objects only; the
AMQP message, its headers, settlement and tracing stay inside :mod:`messaging`.
"""

from collections.abc import Callable

from aio_pika.abc import AbstractChannel, AbstractConnection

from messaging import topology
from messaging.connection import open_channel
from messaging.handlers import Handler, M
from messaging.messages import Message
from messaging.metered import MessageMeter
from messaging.metrics import MessagingMetrics
from messaging.publisher import Publisher
from messaging.rpc import RpcClient
from messaging.subscriber import Subscription, subscribe

PublisherFactory = Callable[[AbstractChannel, topology.Declared], Publisher]


class Broker:
    def __init__(
        self,
        channel: AbstractChannel,
        declared: topology.Declared,
        publisher: Publisher,
        prefetch: int | None = None,
    ) -> None:
        self.channel = channel
        self.declared = declared
        self.publisher = publisher
        self.prefetch = prefetch

    @classmethod
    async def open(
        cls,
        connection: AbstractConnection,
        *,
        prefetch: int | None = None,
        publisher: PublisherFactory = Publisher.on,
        metrics: MessagingMetrics | None = None,
        consumes: topology.QueueSpec | None = None,
    ) -> "Broker":
        """A new channel on ``connection``, with the topology declared on it; with
        ``metrics``, every message published and every delivery processed is recorded.

        ``consumes`` (a worker): the queue it will consume, on a channel of its own that
        declares that queue alone; it publishes on another, with the whole topology. A
        publishing channel the broker refuses for good is replaced (:mod:`messaging.refusals`),
        and a consuming channel closed would give back every delivery it holds, those whose
        events are held through the refusal first. A consuming channel is closed and opened
        again after a quiet spell (:mod:`messaging.subscriber`), and aio-pika's robust channel
        then declares again what was declared on it: its own queue, not what an operator
        deleted on purpose elsewhere. The API publishes on the one channel: direct reply-to
        answers the channel that asked."""
        if consumes is None:
            channel, declared = await open_channel(connection, prefetch)
            created = publisher(channel, declared)
        else:
            channel, declared = await open_channel(connection, prefetch, (consumes,))
            created = publisher(*await open_channel(connection))
        if metrics is not None:
            created.meter = MessageMeter.on(metrics, connection)
        return cls(channel, declared, created, prefetch)

    async def publish(self, message: Message, to: topology.Route) -> None:
        """Persistent, mandatory, confirmed: returns once the broker has the message."""
        await self.publisher.publish(message, to)

    async def subscribe(
        self, queue: topology.QueueSpec, model: type[M], handler: Handler[M]
    ) -> Subscription:
        """Consume ``queue`` with ``handler`` (see :mod:`messaging.subscriber`)."""
        return await subscribe(
            self.declared.queues[queue.name],
            model,
            handler,
            publisher=self.publisher,
            dead_letter_exchange=self.publisher.exchange(topology.DEAD_LETTER_EXCHANGE.name),
            prefetch=self.prefetch,
            routes=topology.routes_into(queue),
        )

    async def rpc(self, *, reply_timeout: float) -> RpcClient:
        """A started request/reply client on this channel; close it before the channel."""
        client = RpcClient(self.channel, self.publisher, reply_timeout=reply_timeout)
        await client.start()
        return client
