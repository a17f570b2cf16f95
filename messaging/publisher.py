"""Publishing message models: work and events to a route, replies to whoever asked.

Work and events are persistent and ``mandatory`` on a channel with publisher confirms: an
unroutable message raises (once its route's queues were bound again: :mod:`messaging.returns`),
and ``publish`` returns only once the broker has taken it. A reply
goes through the default exchange to the asker's direct reply-to address; it is not mandatory,
because an asker that has gone away is not an error (its outcome is recorded in the store).
"""

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustChannel
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
    ConnectionClosed,
    DeliveryError,
    PublishError,
)
from aiormq.exceptions import ChannelAccessRefused, ChannelLockedResource

from messaging import instrumentation, lasting
from messaging.envelope import encode
from messaging.handlers import Handled, NotAnAttempt
from messaging.messages import Message
from messaging.metered import NO_METER, MessageMeter
from messaging.refusals import Refusals
from messaging.returns import Returns
from messaging.topology import Declared, Route

log = structlog.get_logger(__name__)

# What a publish raises when its channel, or the connection under it, is gone.
CHANNEL_GONE = (ChannelInvalidStateError, ChannelClosed, ConnectionClosed, AMQPConnectionError)
# Channel errors a reopened channel would meet again (403 ACCESS_REFUSED, 406
# PRECONDITION_FAILED, 405 RESOURCE_LOCKED): not held, so each fails its handler at once.
LASTING_CHANNEL_ERRORS = (ChannelAccessRefused, ChannelPreconditionFailed, ChannelLockedResource)
# Seconds, at most, an event is held while the broker refuses it (a nack: a full queue) or its
# channel is being reopened, published again after a growing pause, before that fails the
# handler (and so uses up one of its attempts); a worker's PUBLISH_HOLD.
PUBLISH_HOLD = 30.0
HOLD_PAUSE, HOLD_PAUSE_AT_MOST = 0.25, 5.0
# Seconds, at most, a reply is held so: past the asker's reply timeout (5 s) nobody waits for
# it. A reply not taken by then is dropped (replies are at-most-once; the outcome is stored).
REPLY_HOLD = 3.0
# Seconds a worker waits for its publishing channel to be back before it publishes a retry
# copy or a dead letter, or gives back a delivery whose publish found the channel gone.
READY_WITHIN = 10.0


class PublishReleased(asyncio.CancelledError):
    """The worker is stopping while an event is held: the delivery goes back to the broker
    unsettled, as when the connection closes under a handler, and counts no attempt."""


class PublishingLost(RuntimeError):
    """The publishing channel stayed closed while the connection was up: aio-pika gave up
    restoring it, and every publish would fail."""


@dataclass(frozen=True)
class ReplyAddress:
    """Where the asker waits for its reply."""

    reply_to: str
    correlation_id: str | None


class Publisher:
    """Publishes on one channel; ``meter`` (set by :meth:`messaging.broker.Broker.open`)
    counts and times every message it sends, and every delivery its subscribers process."""

    def __init__(
        self,
        exchanges: Mapping[str, AbstractExchange],
        default_exchange: AbstractExchange,
        meter: MessageMeter = NO_METER,
        *,
        channel: AbstractChannel | None = None,
    ) -> None:
        self._exchanges = exchanges
        self._default_exchange = default_exchange
        self.meter = meter
        # Nacks in a row on ``channel``: a channel refused for good is replaced (see refusals).
        self._channel = channel
        self.refusals = Refusals(channel)
        self.hold = PUBLISH_HOLD
        self._released = asyncio.Event()
        self.returns = Returns(channel)

    @property
    def default_exchange(self) -> AbstractExchange:
        """The channel's default exchange: to one queue by its name, or a reply-to address."""
        return self._default_exchange

    def exchange(self, name: str) -> AbstractExchange:
        """A declared exchange, on this publisher's channel."""
        return self._exchanges[name]

    @classmethod
    def on(cls, channel: AbstractChannel, declared: Declared) -> "Publisher":
        return cls(declared.exchanges, channel.default_exchange, channel=channel)

    async def publish(
        self,
        message: Message,
        to: Route,
        *,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_type: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """Publish persistent and mandatory; returns once the broker confirmed it, raises
        TimeoutError at ``deadline`` (loop time) if it has not. Returned unroutable, it goes
        once more after the route's queues are bound again (:mod:`messaging.returns`);
        returned again, or not bound again by ``deadline``, :class:`PublishError`."""
        amqp_message = encode(
            message,
            persistent=True,
            correlation_id=correlation_id,
            reply_to=reply_to,
            message_type=message_type,
        )
        exchange = self._exchanges[to.exchange.name]
        destination = f"{exchange.name}/{to.routing_key}"

        async def publish_once() -> None:
            # A Timeout with no deadline costs 2 µs a publish: a worker's events have none.
            bound = contextlib.nullcontext() if deadline is None else asyncio.timeout_at(deadline)
            async with bound:
                await self.refusals.watch(
                    instrumentation.publish(
                        exchange, amqp_message, to.routing_key, mandatory=True, meter=self.meter
                    ),
                    destination,
                )

        async with self.returns.alone(amqp_message.message_id, deadline):
            sent_at = asyncio.get_running_loop().time()
            try:
                await publish_once()
            except PublishError as exc:
                if not await self.returns.bound_again(to, exc, sent_at, deadline):
                    raise
                await publish_once()

    async def reply(self, message: Message, to: ReplyAddress) -> None:
        """Answer a request on its direct reply-to address (at-most-once, by design)."""
        amqp = encode(message, persistent=False, correlation_id=to.correlation_id)
        await instrumentation.publish(
            self._default_exchange, amqp, to.reply_to, mandatory=False, meter=self.meter
        )

    async def send(
        self,
        handled: Handled,
        reply_to: ReplyAddress | None,
        *,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        """Publish what a handler produced: the reply (if the request asked for one) and the
        events at once, all confirms awaited together. Raises the first failure, once every
        publish has finished, so nothing is left in flight behind the caller's back. A message
        the broker refuses, or whose channel is lost under it, is held while ``wanted()`` (its
        delivery can still be acked): :meth:`_held`; a reply not taken within
        :data:`REPLY_HOLD` is dropped."""
        sends: list[Awaitable[None]] = [
            self._held(partial(self.publish, e.message, e.to), e.message, e.to.routing_key, wanted)
            for e in handled.events
        ]
        if handled.reply is not None and reply_to is not None:
            sends.insert(0, self._reply_held(handled.reply, reply_to, wanted))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        # DEBUG: the handler's own line tells the story; the trace shows every publish.
        if handled.reply is not None and reply_to is not None:
            log.debug("replied", message_id=handled.reply.message_id)
        for event in handled.events:
            log.debug(
                "published", routing_key=event.to.routing_key, message_id=event.message.message_id
            )

    def release(self) -> None:
        """The worker is stopping: the events held now, and those refused from now on, give
        their delivery back unsettled (:class:`PublishReleased`)."""
        self._released.set()

    async def _reply_held(
        self, reply: Message, to: ReplyAddress, wanted: Callable[[], bool]
    ) -> None:
        """The reply, held for :data:`REPLY_HOLD` at most; then dropped, not failed: the asker
        has answered 202 by then, and reads the stored outcome (direct reply-to is
        at-most-once by design). Failing the handler instead spent an attempt on a request
        already decided, to send a reply nobody waited for."""
        try:
            await self._held(partial(self.reply, reply, to), reply, to.reply_to, wanted, REPLY_HOLD)
        except (DeliveryError, NotAnAttempt, *CHANNEL_GONE) as exc:
            if not wanted():
                raise  # the delivery is going back anyway: redelivered, it replies again
            cause = exc.__cause__ if isinstance(exc, NotAnAttempt) else exc
            log.warning(
                "reply not sent; the asker reads the outcome from the store",
                message_id=reply.message_id,
                error=type(cause).__name__,
            )

    async def _held(
        self,
        publishing: Callable[[], Awaitable[None]],
        message: Message,
        routing_key: str,
        wanted: Callable[[], bool],
        hold: float | None = None,
    ) -> None:
        """Publish a reply or an event; while the broker refuses it (a nack: the queue is
        full), or the publishing channel is lost under it (the broker closed it, for an
        exchange deleted say, and aio-pika is reopening it), publish it again after a pause,
        once the channel is back, for ``hold`` seconds (the publisher's :attr:`hold`). The
        handler's work is done and recorded by then: failing it would spend its attempts
        within a second or two and park the request in the dead-letter queue, charged and
        never fulfilled (fault campaigns: a 60 s refusal parked a third of the reservations;
        an exchange deleted 30 times, six). Held, the message keeps its place in the worker's
        prefetch, and the worker takes no more work than that meanwhile. A channel lost under
        it leaves its outcome unknown: it goes again (events are at-least-once, and the
        fulfilment is idempotent). What a reopened channel would meet again (a permission
        refused, say) is not held. Still not taken when the hold runs out: a
        :class:`NotAnAttempt`, and the delivery goes back to its queue as the same attempt, to
        be handled again (a replay of its stored outcome) and its event held again, for as long
        as the broker refuses (until round twenty-three it counted: a refusal past about 90 s
        parked the requests charged and never fulfilled)."""
        loop = asyncio.get_running_loop()
        hold = self.hold if hold is None else hold
        until = loop.time() + hold
        pause = HOLD_PAUSE
        held = False
        while True:
            try:
                await publishing()
                return
            except (PublishError, *LASTING_CHANNEL_ERRORS):  # returned (unroutable), or lasting
                raise
            except (DeliveryError, *CHANNEL_GONE) as exc:
                if self._released.is_set():
                    raise PublishReleased("the worker is stopping") from None
                if not wanted():
                    raise
                if loop.time() + pause > until:
                    raise NotAnAttempt(f"the broker did not take it within {hold:g} s") from exc
                if not held:
                    log.warning(
                        "holding a message the broker did not take",
                        cause="refused" if isinstance(exc, DeliveryError) else "channel closed",
                        error=type(exc).__name__,
                        routing_key=routing_key,
                        message_id=message.message_id,
                        hold_s=until - loop.time(),
                    )
                held = True
                last = exc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), pause)
            if self._released.is_set():
                raise PublishReleased("the worker is stopping")
            pause = min(pause * 2, HOLD_PAUSE_AT_MOST)
            # The channel reopened meanwhile (lost, or replaced by refusals), restored; never a
            # publish on a channel still being restored (see ready()).
            if not await self.ready(max(0.0, until - loop.time())):
                raise NotAnAttempt(
                    f"the broker did not take it within {hold:g} s: its channel was not back"
                ) from last

    async def ready(self, within: float = READY_WITHIN) -> bool:
        """True once this publisher's channel is open with its exchanges declared again (a
        robust channel restores them as it reopens); False after ``within`` seconds, or at
        once when the worker is stopping (:meth:`release`): then publish nothing on it. A
        publish on a channel still being restored, to an exchange not yet declared again,
        closed it mid-restore, and aio-pika left it closed for good (a fault campaign)."""
        channel = self._channel
        if not isinstance(channel, AbstractRobustChannel):
            return channel is None or not channel.is_closed
        if self._released.is_set():  # stopping: give the delivery back now
            return False
        restored = asyncio.ensure_future(channel.ready())
        released = asyncio.ensure_future(self._released.wait())
        try:
            await asyncio.wait((restored, released), timeout=within, return_when=FIRST_COMPLETED)
        finally:
            for waiting in (restored, released):
                waiting.cancel()
            await asyncio.gather(restored, released, return_exceptions=True)
        return restored.done() and not restored.cancelled() and restored.exception() is None

    async def until_lost(self, connected: Callable[[], bool]) -> PublishingLost:
        """Returns (does not raise) once this publisher's channel has been closed for
        :data:`~messaging.lasting.LOST_AFTER` seconds while ``connected()`` (the connection
        is up), its restore tried again every :data:`~messaging.lasting.RESTORE_EVERY`
        seconds meanwhile; runs until cancelled otherwise. A robust channel closed
        mid-restore, or whose restore the broker refused, stays closed for good (fault
        campaigns): a worker went on consuming, and held each delivery in turn while it
        waited for the channel; the API answered 503 to every request."""
        await lasting.until_closed_for_good(self._channel, connected, "publishing")
        return PublishingLost(
            f"the publishing channel has been closed for {lasting.LOST_AFTER:g} s while the broker "
            "connection is up, and was not restored; exiting, so that a restart opens a new one"
        )
