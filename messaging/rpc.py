"""Request/reply over RabbitMQ direct reply-to, done properly.

The request carries ``reply_to=amq.rabbitmq.reply-to`` and a ``correlation_id``; RabbitMQ routes
the reply straight back to the channel that published, so every reply reaches the API process
that asked, however many API replicas run. Direct reply-to is at-most-once: a reply sent while
the asking channel is gone is dropped, which is why the worker records every outcome in the
database and ``GET /reservations/{id}`` can always tell the final state.

What the tutorial skips (after aio-pika's ``patterns/rpc.py``):

- every call has a timeout, and its future is removed however the call ends;
- pending calls end at once when the channel closes, instead of waiting out their timeout
  (as a :class:`ReplyLost`: the request was published, so its outcome is unknown, not failed);
- a late reply (after its timeout) or a reply to an unknown correlation id is logged and dropped;
- publishing is ``mandatory`` with publisher confirms: an unroutable request raises.

Callers pass and get message models: ``await rpc.call(request, CreditChecked, to=route)``.
"""

import asyncio
import uuid
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    DeliveryError,
    PublishError,
)

from messaging import instrumentation
from messaging.messages import Message
from messaging.publisher import Publisher
from messaging.topology import DIRECT_REPLY_TO, Route

log = structlog.get_logger(__name__)

# Seconds to wait for the broker to take (confirm) a request; a blocked or reconnecting
# connection answers 503 after this, rather than a 202 for a request that was never sent.
PUBLISH_TIMEOUT = 5.0

R = TypeVar("R", bound=Message)


class BrokerUnavailable(RuntimeError):
    """The request could not be handed to the broker (down, closed channel, unroutable)."""


class ReplyTimeout(TimeoutError):
    """No reply arrived in time. The request was published and may still complete."""


class ReplyLost(ReplyTimeout):
    """The channel closed after the request was published: its reply can no longer arrive
    here, but the request may still complete (its outcome is recorded either way)."""


class RpcClient:
    """Publishes requests and matches replies to them by correlation id."""

    def __init__(
        self, channel: AbstractChannel, publisher: Publisher, *, reply_timeout: float
    ) -> None:
        self._channel = channel
        self._publisher = publisher
        self._reply_timeout = reply_timeout
        self._pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._reply_queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Consume the direct reply-to pseudo-queue; it must happen before the first publish."""
        self._reply_queue = await self._channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        self._consumer_tag = await self._reply_queue.consume(
            instrumentation.consumer(DIRECT_REPLY_TO, self._on_reply, self._publisher.meter),
            no_ack=True,
        )
        self._channel.close_callbacks.add(self._on_channel_close)

    async def close(self) -> None:
        self._fail_pending(ReplyLost("the request/reply client is shutting down"))
        self._channel.close_callbacks.discard(self._on_channel_close)
        if self._reply_queue is not None and self._consumer_tag and not self._channel.is_closed:
            await self._reply_queue.cancel(self._consumer_tag)

    async def call(self, request: Message, reply_model: type[R], *, to: Route) -> R:
        """Publish ``request`` (persistent, JSON) and wait at most ``reply_timeout`` for its
        reply, validated as ``reply_model``.

        Raises :class:`BrokerUnavailable` if the broker did not take the request,
        :class:`ReplyTimeout` if it took it but no reply came back in time, and
        :class:`~messaging.messages.InvalidMessage` if the reply came but is not a
        ``reply_model`` (the request was handled; its outcome is recorded).
        """
        reply = await self._request(request, to)
        return reply_model.from_body(reply.body)

    async def _request(self, request: Message, to: Route) -> AbstractIncomingMessage:
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        if self._channel.is_closed:
            self._pending.pop(correlation_id, None)
            raise BrokerUnavailable("the broker channel is closed")
        try:
            await self._publish(request, to, correlation_id)
            async with asyncio.timeout(self._reply_timeout):
                return await future
        except ReplyLost:
            raise
        except TimeoutError:
            raise ReplyTimeout(f"no reply within {self._reply_timeout}s") from None
        finally:
            self._pending.pop(correlation_id, None)

    async def _publish(self, request: Message, to: Route, correlation_id: str) -> None:
        """Publish and wait for the confirm. Refused, or never sent: BrokerUnavailable (503,
        safe to retry). Sent but unconfirmed (the connection broke mid-way): ReplyLost, since
        the request may be queued and a retry could reserve twice."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._publisher.publish(
                    request,
                    to,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    message_type=to.routing_key,
                )
        except (DeliveryError, PublishError) as exc:
            raise BrokerUnavailable(f"the broker did not route the request: {exc}") from exc
        except (ChannelInvalidStateError, TimeoutError) as exc:
            raise BrokerUnavailable(f"the broker did not take the request: {exc!r}") from exc
        except (AMQPError, ConnectionError) as exc:
            raise ReplyLost(f"the connection broke before the broker confirmed: {exc!r}") from exc

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None:
            log.warning(
                "reply dropped: late or unknown correlation id",
                correlation_id=message.correlation_id,
            )
        elif not future.done():
            future.set_result(message)

    def _on_channel_close(self, *_: Any) -> None:
        self._fail_pending(ReplyLost("the broker channel closed before the reply came"))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
