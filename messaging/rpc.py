"""Request/reply over RabbitMQ direct reply-to, done properly.

The request carries ``reply_to=amq.rabbitmq.reply-to`` and a ``correlation_id``; RabbitMQ routes
the reply straight back to the channel that published, so every reply reaches the API process
that asked, however many API replicas run. Direct reply-to is at-most-once: a reply sent while
the asking channel is gone is dropped, which is why the worker records every outcome in the
database and ``GET /reservations/{id}`` can always tell the final state.

What the tutorial skips (after aio-pika's ``patterns/rpc.py``):

- every call has a timeout; its future is removed (and its result retrieved) however it ends;
- pending calls end at once when the channel closes, instead of waiting out their timeout
  (as a :class:`ReplyLost`: the request was confirmed, so it is queued, not failed);
- a late reply (after its timeout) or a reply to an unknown correlation id is logged and dropped;
- publishing is ``mandatory`` with publisher confirms: an unroutable request raises.
After a reconnect (see also :mod:`messaging.readiness` and :mod:`messaging.republisher`):

- a request is published only once the channel *and* its reply consumer are restored;
- a publish whose confirm never came has an unknown outcome: the same request (same
  reservation id; the worker is idempotent by it) is published again once the channel is
  back. No copy confirmed within ``PUBLISH_TIMEOUT``: :class:`RequestUnconfirmed` (a 202), and
  the background republisher keeps trying;
- :class:`BrokerUnavailable` (a 503) only when no copy can have been sent, or the broker
  returned or refused it and no earlier copy's confirm was lost: a retry then cannot reserve
  twice. A copy refused after one whose confirm was lost is a :class:`RequestUnconfirmed`.
  A republisher holding its most (:attr:`Republisher.full`) makes every new call a
  :class:`BrokerUnavailable`, before it publishes anything.

Callers pass and get message models: ``await rpc.call(request, CreditChecked, to=route)``.
"""

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError

from messaging import instrumentation
from messaging.messages import Message
from messaging.publisher import Publisher
from messaging.readiness import ChannelReadiness
from messaging.republisher import Republisher
from messaging.subscriber import CANCEL_WITHIN, cancel_consumer
from messaging.topology import DIRECT_REPLY_TO, Route

log = structlog.get_logger(__name__)

# Seconds a call may spend getting a confirm for its request (waiting for the channel and
# republishing included); a blocked or reconnecting connection answers 503 or 202 after this.
PUBLISH_TIMEOUT = 5.0
# Seconds between an unconfirmed publish and the next copy.
UNCONFIRMED_PAUSE = 0.05

R = TypeVar("R", bound=Message)


class BrokerUnavailable(RuntimeError):
    """The broker did not take the request (down, refused, unroutable): safe to retry."""


class ReplyTimeout(TimeoutError):
    """No reply arrived in time. The request is queued (or will be) and may still complete."""


class ReplyLost(ReplyTimeout):
    """The channel closed after the request was confirmed: its reply can no longer arrive
    here, but the request is queued (its outcome is recorded either way)."""


class RequestUnconfirmed(ReplyTimeout):
    """No copy of the request was confirmed in time, but one may have been taken; the client
    keeps republishing it in the background (see :mod:`messaging.republisher`)."""


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
        self._readiness = ChannelReadiness(channel)
        # The republisher waits out an outage of any length: no grace, only its own deadline.
        self.republisher = Republisher(publisher, partial(self._readiness.wait, grace=False))

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def channel_open(self) -> bool:
        """The channel requests go out and replies come back on is open, and restored since it
        last closed (a robust channel closed for good stays closed while the connection is
        up, but for the moments of each restore tried and refused)."""
        return self._readiness.restored

    async def start(self) -> None:
        """Consume the direct reply-to pseudo-queue; it must happen before the first publish."""
        self._reply_queue = await self._channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        self._consumer_tag = await self._reply_queue.consume(
            instrumentation.consumer(DIRECT_REPLY_TO, self._on_reply, self._publisher.meter),
            no_ack=True,
        )
        self._channel.close_callbacks.add(self._on_channel_close)
        self._readiness.watch()

    async def close(self) -> None:
        """End the pending calls, the republishing, and the reply consumer, in bounded time:
        a broker that blocks the connection (a memory or disk alarm) never answers the cancel,
        and a stop waited for it until the alarm cleared."""
        self._fail_pending(ReplyLost("the request/reply client is shutting down"))
        await self.republisher.close()
        self._channel.close_callbacks.discard(self._on_channel_close)
        self._readiness.unwatch()
        if self._reply_queue is not None and self._consumer_tag:  # off the restore list too
            until = asyncio.get_running_loop().time() + CANCEL_WITHIN
            await cancel_consumer(self._reply_queue, self._consumer_tag, until=until)

    async def call(
        self,
        request: Message,
        reply_model: type[R],
        *,
        to: Route,
        may_be_queued: Callable[[bool], object] = lambda _: None,
    ) -> R:
        """Publish ``request`` (persistent, JSON) and wait at most ``reply_timeout`` for its
        reply, validated as ``reply_model``.

        Raises :class:`BrokerUnavailable` if the broker did not take the request,
        :class:`ReplyTimeout` if it took it (or will) but no reply came back in time, and
        :class:`~messaging.messages.InvalidMessage` if the reply came but is not a
        ``reply_model`` (the request was handled; its outcome is recorded).

        ``may_be_queued`` is told True as the first copy of the request goes out (from then on
        it may be queued, whatever ends the call, a cancellation included), and False if the
        broker then returned or refused it with no earlier copy in doubt (nothing is queued:
        :class:`BrokerUnavailable`).
        """
        reply = await self._request(request, to, may_be_queued)
        return reply_model.from_body(reply.body)

    async def _request(
        self, request: Message, to: Route, may_be_queued: Callable[[bool], object]
    ) -> AbstractIncomingMessage:
        if self.republisher.full:  # the broker has not confirmed thousands: take no more
            raise BrokerUnavailable(
                f"{self.republisher.in_progress} requests still wait for the broker's confirm"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_TIMEOUT
        maybe_sent = False  # a copy went out and its confirm never came
        told = False  # may_be_queued was told a copy went out
        # Each turn waits for the channel; the wait is False once the deadline has passed,
        # whether the channel is open (a blocked connection: no confirm comes) or not.
        while await self._readiness.wait(deadline):
            correlation_id = uuid.uuid4().hex
            future: asyncio.Future[AbstractIncomingMessage] = loop.create_future()
            self._pending[correlation_id] = future
            try:
                if not told:
                    may_be_queued(True)
                    told = True
                if await self._publish(request, to, correlation_id, deadline):
                    async with asyncio.timeout(self._reply_timeout):
                        return await future
                maybe_sent = True
                await asyncio.sleep(UNCONFIRMED_PAUSE)  # let the channel notice it is down
            except BrokerUnavailable:
                if not maybe_sent:
                    if told:
                        may_be_queued(False)
                    raise
                # This copy was refused, but an earlier one may be queued: not a 503, which
                # says a retry cannot reserve twice (a fault campaign: charged twice).
                self.republisher.keep_trying(request, to)
                raise RequestUnconfirmed(
                    "a copy whose confirm was lost may be queued, and the broker refused the "
                    "next; republishing"
                ) from None
            except ReplyTimeout:  # ReplyLost: confirmed (queued), then the channel closed
                raise
            except TimeoutError:
                raise ReplyTimeout(f"no reply within {self._reply_timeout}s") from None
            finally:
                self._forget(correlation_id, future)
        if maybe_sent:
            self.republisher.keep_trying(request, to)
            raise RequestUnconfirmed(f"no confirm within {PUBLISH_TIMEOUT}s; republishing")
        raise BrokerUnavailable("the broker channel is not open")

    async def _publish(
        self, request: Message, to: Route, correlation_id: str, deadline: float
    ) -> bool:
        """True once the broker confirmed the request; False if the outcome is unknown (sent,
        perhaps, but no confirm). Returned or refused: BrokerUnavailable."""
        try:
            # The deadline is the publisher's to keep: past it, a return whose queue it was
            # binding again stays a return (not queued: a 503), not an unknown outcome.
            await self._publisher.publish(
                request,
                to,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                message_type=to.routing_key,
                deadline=deadline,
            )
        except DeliveryError as exc:  # returned (unroutable) or nacked: not queued
            raise BrokerUnavailable(f"the broker did not take the request: {exc}") from exc
        # aio-pika's own list of what a lost connection or channel raises (RuntimeError among
        # them: a closed channel raises one), and TimeoutError (an OSError): no confirm in time.
        # Anything else is a bug, raised to the caller.
        except CONNECTION_EXCEPTIONS as exc:
            log.warning(
                "request unconfirmed; publishing it again",
                message_id=request.message_id,
                error=repr(exc),
            )
            return False
        return True

    def _forget(
        self, correlation_id: str, future: "asyncio.Future[AbstractIncomingMessage]"
    ) -> None:
        """Remove a call's future; a failure set on it that nobody awaited is retrieved here,
        so asyncio never logs "Future exception was never retrieved"."""
        self._pending.pop(correlation_id, None)
        if future.done() and not future.cancelled():
            future.exception()
        else:
            future.cancel()

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
