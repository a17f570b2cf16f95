"""Consuming one queue with a typed handler, and stopping gracefully.

:func:`subscribe` is the only way this project consumes work: manual acks, the CONSUMER span
completed (:func:`messaging.instrumentation.consumer`), each delivery handled by
:func:`messaging.delivery.handle`, and the deliveries in flight counted, so that
:meth:`Subscription.stop` can stop taking new ones and let the started ones finish (and ack)
within a bound. Prefetched deliveries that never started go back to the queue when the channel
closes.

RabbitMQ cancels a consumer whose queue is deleted; aio-pika then restores the queue and the
consumer (within a second or so). When it cannot, because the queue was declared again with
other arguments, it retries for ever and says so only at DEBUG: a worker that looks alive and
takes nothing. :meth:`Subscription.until_lost` notices a consumer missing for
:data:`~messaging.lasting.LOST_AFTER` seconds on an open channel, and the worker exits with one line
(:class:`ConsumerLost`); restarted, its start-up check names the conflict. (A queue replaced
while the connection is down fails the channel's restore instead: the channel keeps closing,
and the worker waits for it like for a broker that is down.)

It also notices a consumer the broker keeps but sends nothing: after ``credit-check`` was
deleted under load, RabbitMQ 3.10 sent no cancel in 4 of 14 tries and kept the worker's
consumer, with 64 deliveries unacked that never arrived and 596 messages ready (a fault
campaign; the API answered 202 to every request from then on). A restarted worker consumed them
all. With fewer messages behind it than the prefetch, such a consumer holds them all unacked
and none is ready: nothing tells it from an idle one (a re-check of that campaign, 2 of 3
deletions at light traffic). So a consumer sent nothing for
:data:`~messaging.lasting.LOST_AFTER` seconds with nothing in flight gets its channel closed
and opened again (:meth:`Subscription._renew`): the broker takes back what the old one held,
and aio-pika's robust channel declares its queue and consumes again, with its tag. A worker's
consuming channel declares its own queue alone (:meth:`messaging.broker.Broker.open`), so that
is all a renewal declares again. That is also how a queue deleted without a cancel to its
consumer comes back (3.10 again, after a first deletion: a review deleted ``credit-check``
five times under load, and its worker sat silent for minutes, the watchdog's question answered
404, which it had counted as no answer). A consuming channel that stays closed while the
connection is up (its declaration refused) is tried again every
:data:`~messaging.lasting.RESTORE_EVERY` seconds, and given up after
:data:`~messaging.lasting.LOST_AFTER` seconds.

And a consumer sent nothing for :data:`~messaging.lasting.CHECK_EVERY` seconds binds its queue
again (:meth:`Subscription._keeping_bound`): a binding deleted while another queue matches the
routing key sends no message back unroutable, so no publisher binds it again.
"""

import asyncio
from collections.abc import Callable
from typing import Literal, cast

import aiormq
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import ChannelInvalidStateError
from opentelemetry import trace

from messaging import delivery, instrumentation, lasting
from messaging.handlers import Handler, M
from messaging.instrumentation import OnMessage
from messaging.lasting import until_lasting
from messaging.metered import NO_METER, MessageMeter
from messaging.publisher import Publisher
from messaging.refusals import ChannelReplaced
from messaging.topology import Route, bind_route, channel_apart

log = structlog.get_logger(__name__)
# Seconds a delivery cut off by a connection drop waits for its handler (see _tracked).
HANDLER_GRACE = 1.0
# Seconds a stop waits for the broker to confirm the consumer's cancel.
CANCEL_WITHIN = 2.0
# Seconds the watchdog's question to the broker (how many messages are ready) may take.
ASK_WITHIN = 5.0
# Seconds a renewal waits for the channel to be open again; past that, it is left to aio-pika
# (a connection down) or to the watchdog's check for a channel closed for good.
RENEW_WITHIN = 10.0
# Seconds after a renewal during which a redelivered delivery counts as given back by it.
GIVEN_BACK_WITHIN = 5.0
# What the watchdog's question answers for a queue the broker does not have (a 404).
QUEUE_GONE = -1

_RETURNED = {"reason": "the worker is stopping; the broker redelivers it untouched"}


class ConsumerLost(RuntimeError):
    """The consumer is gone for good, or the broker sends it nothing: the worker must exit
    (:meth:`Subscription.until_lost` says which)."""


class Subscription:
    """A running consumer on one queue; counts the deliveries it is handling."""

    def __init__(
        self,
        queue: AbstractQueue,
        on_message: OnMessage,
        meter: MessageMeter = NO_METER,
        *,
        prefetch: int | None = None,
        routes: tuple[Route, ...] = (),
    ) -> None:
        self._queue = queue
        self._on_message = on_message
        self._meter = meter
        self._prefetch = prefetch  # the channel's, None for no limit
        self._routes = routes  # bound again in quiet spells (_keeping_bound)
        self._bind_refused_at: float | None = None
        self._tag: str | None = None
        self.in_flight = 0
        # Deliveries that reached this consumer, and how many each watchdog check last saw.
        self.delivered = 0
        self._delivered_at_check: dict[Literal["stalled", "quiet", "bound"], int] = {
            "stalled": 0,
            "quiet": 0,
            "bound": 0,
        }
        # Times its channel was closed and opened again after it had been sent nothing, when
        # the last was, and how many deliveries came back redelivered right after one.
        self.renewals = 0
        self._renewed_at: float | None = None
        self.given_back = 0
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        callback = instrumentation.consumer(self._queue.name, self._tracked, self._meter)
        self._tag = await self._queue.consume(callback, no_ack=False)
        log.info("consuming", queue=self._queue.name)

    async def until_lost(self, connected: Callable[[], bool]) -> ConsumerLost:
        """Returns (does not raise) once the consumer has been missing from its open channel
        (:meth:`_missing`), or has been sent nothing while its queue held ready messages
        (:meth:`_stalled`), or its channel has been closed while ``connected()`` (the
        connection is up), for :data:`~messaging.lasting.LOST_AFTER` seconds; runs until
        cancelled otherwise, renewing a quiet consumer's channel (:meth:`_renewing`). While
        the connection is down and being restored, nothing counts."""
        name, lasting_for = self._queue.name, f"{lasting.LOST_AFTER:g} s"
        checks = {
            asyncio.ensure_future(
                until_lasting(self._missing, lasting.LOST_AFTER, lasting.CHECK_EVERY)
            ): (
                f"not consuming from queue '{name}' for {lasting_for}: RabbitMQ cancelled the "
                "consumer and the queue could not be restored (deleted and declared again "
                "with other arguments?); exiting, so that a restart says why"
            ),
            asyncio.ensure_future(
                until_lasting(self._stalled, lasting.LOST_AFTER, lasting.CHECK_EVERY)
            ): (
                f"queue '{name}' has held ready messages for {lasting_for}, and the broker "
                "sent this consumer none of them, though it had room: the broker's consumer is "
                "stuck (seen on RabbitMQ 3.10 after the queue was deleted under load); "
                "exiting, so that a restart consumes again"
            ),
            asyncio.ensure_future(
                lasting.until_closed_for_good(self._queue.channel, connected, "consuming")
            ): (
                f"the channel consuming queue '{name}' has been closed for {lasting_for} while "
                "the broker connection is up, and could not be opened again (its queue "
                "declared again with other arguments?); exiting, so that a restart says why"
            ),
        }
        keeping = [asyncio.ensure_future(self._renewing())]
        if self._routes:
            keeping.append(asyncio.ensure_future(self._keeping_bound()))
        try:
            done, _ = await asyncio.wait([*checks, *keeping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*checks, *keeping]:
                task.cancel()
            await asyncio.gather(*checks, *keeping, return_exceptions=True)
        first = done.pop()
        first.result()  # a check that failed raises here
        if first in keeping:  # they run until cancelled
            raise RuntimeError("the renewal of the consuming channel, or its binding, stopped")
        return ConsumerLost(checks[first])

    def _moved(self, check: Literal["stalled", "quiet", "bound"]) -> bool:
        """Whether anything was delivered since ``check`` last asked."""
        moved = self.delivered != self._delivered_at_check[check]
        self._delivered_at_check[check] = self.delivered
        return moved

    async def _missing(self) -> bool:
        """The consumer is missing from its open channel (a closed one is being restored)."""
        channel = self._queue.channel
        if self._tag is None or channel.is_closed:
            return False
        try:
            # aio-pika's robust channel reads the same registry to find what to restore.
            underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        except ChannelInvalidStateError:  # closed meanwhile: being restored
            return False
        return self._tag not in underlay.consumers

    async def _stalled(self) -> bool:
        """Nothing delivered since the last check, though the consumer has room for more (fewer
        deliveries in flight than the prefetch), while its queue holds ready messages: a
        healthy broker sends them."""
        if self._moved("stalled") or self._tag is None:
            return False
        if self._prefetch is not None and self.in_flight >= self._prefetch:
            return False
        return (await self._ready_messages() or 0) > 0

    async def _ready_messages(self) -> int | None:
        """How many messages are ready in the queue (None if the broker does not say within
        :data:`ASK_WITHIN`; :data:`QUEUE_GONE` if it has no such queue), asked on a channel
        apart (:func:`~messaging.topology.channel_apart`): a queue that is not there closes
        the channel it is asked on (404), which must not be the one holding deliveries."""
        channel = self._queue.channel
        if channel.is_closed:  # being restored: nothing counts
            return None
        try:
            async with asyncio.timeout(ASK_WITHIN):
                underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
                async with channel_apart(underlay.connection) as asking:
                    declared = await asking.queue_declare(self._queue.name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return QUEUE_GONE
        except (TimeoutError, *CONNECTION_EXCEPTIONS):
            return None
        return declared.message_count or 0

    async def _renewing(self) -> None:
        """Renews the channel (:meth:`_renew`) each time the consumer has been sent nothing,
        with nothing in flight, for :data:`~messaging.lasting.LOST_AFTER` seconds. Runs until
        cancelled."""
        while True:
            await until_lasting(self._quiet, lasting.LOST_AFTER, lasting.CHECK_EVERY)
            # The broker must answer first, on a channel apart: one blocking the connection (a
            # memory or disk alarm) would not read the close, nor let the channel open again.
            # Nothing may have come in meanwhile.
            ready = await self._ready_messages()
            if ready is None or self.in_flight or self._moved("quiet"):
                continue
            if ready == QUEUE_GONE:
                # Deleted, and the broker sent no cancel (RabbitMQ 3.10, again and again after a
                # first deletion under load: a review's worker sat silent for minutes, counting
                # the 404 as no answer). The renewed channel declares the queue again.
                log.warning(
                    "the queue this worker consumes is gone, and its consumer was not cancelled: "
                    "renewing the channel, which declares the queue again",
                    queue=self._queue.name,
                )
            given_back = self.given_back
            if not await self._renew():
                continue
            await asyncio.sleep(GIVEN_BACK_WITHIN)
            if self.given_back > given_back:
                log.warning(
                    "the consumer's channel, renewed after a quiet spell, gave back deliveries "
                    "it held and never passed on (redelivered right after): the broker's "
                    "consumer was likely stuck",
                    queue=self._queue.name,
                    given_back=self.given_back - given_back,
                )

    async def _keeping_bound(self) -> None:
        """Binds the queue by its routes again each time it has been sent nothing, with
        nothing in flight, for :data:`~messaging.lasting.CHECK_EVERY` seconds (a bind is
        idempotent). A binding an operator deleted sends a publish back unroutable, and the
        publisher binds again (:func:`~messaging.topology.bind_route`); but not when another
        queue matches the key (an audit queue bound by ``#``): the broker routes the message
        there, confirms it, and this queue gets nothing, until the quiet spell's renewal
        after :data:`~messaging.lasting.LOST_AFTER` seconds declared it again (a review's
        98 of 200 requests answered 202 and never decided). Now within one or two checks.
        Runs until cancelled."""
        while True:
            await asyncio.sleep(lasting.CHECK_EVERY)
            if self._moved("bound") or self.in_flight or self._queue.channel.is_closed:
                continue
            try:
                async with asyncio.timeout(ASK_WITHIN):
                    underlay = await self._queue.channel.get_underlay_channel()
                    for route in self._routes:
                        await bind_route(underlay.connection, route)
            except aiormq.exceptions.ChannelClosed as exc:  # refused: no permission, say
                self._bind_refused(exc)
            except (TimeoutError, ChannelInvalidStateError, *CONNECTION_EXCEPTIONS) as exc:
                log.debug("could not bind the queue again", queue=self._queue.name, error=repr(exc))
            except Exception as exc:  # noqa: BLE001 - a check must never end the worker
                self._bind_refused(exc)

    def _bind_refused(self, exc: Exception) -> None:
        """A WARNING, at most once every :data:`~messaging.lasting.LOST_AFTER` seconds."""
        now = asyncio.get_running_loop().time()
        if self._bind_refused_at is None or now - self._bind_refused_at >= lasting.LOST_AFTER:
            self._bind_refused_at = now
            log.warning("could not bind the queue again", queue=self._queue.name, error=repr(exc))

    async def _quiet(self) -> bool:
        """Nothing delivered since the last check and nothing in flight, on an open channel
        with the consumer on it (a missing one is :meth:`_missing`'s to report)."""
        if await self._missing():
            return False
        # Read after the await: a delivery may have come in meanwhile.
        moved = self._moved("quiet")
        idle = not (moved or self.in_flight or self._stopping or self._tag is None)
        return idle and not self._queue.channel.is_closed

    async def _renew(self) -> bool:
        """Close the consuming channel, as the broker closes one on a channel error, and wait
        for aio-pika's robust channel to open it again, within :data:`RENEW_WITHIN`: it
        applies the prefetch, declares what was declared on it (this queue alone, on a
        worker) and consumes again with the same tag. The broker takes back what the old
        channel held unacked (a stuck consumer's deliveries, which never reached this
        process). Only with nothing in flight; a delivery that comes in as the channel closes
        is cut off and redelivered, as after a dropped connection. Past the bound (a
        connection that dropped meanwhile, a declaration refused), aio-pika's reconnection or
        the check for a channel closed for good takes over. True once open again."""
        channel = self._queue.channel
        if not isinstance(channel, AbstractRobustChannel) or channel.is_closed:
            return False
        reopened = asyncio.Event()

        def on_reopen(*_: object) -> None:
            reopened.set()

        channel.reopen_callbacks.add(on_reopen)
        self._renewed_at = asyncio.get_running_loop().time()  # what comes back counts from now
        try:
            async with asyncio.timeout(RENEW_WITHIN):
                underlay = await channel.get_underlay_channel()
                # Not cancelled should it outlast the wait: a close cut short leaves the
                # channel neither open nor closed.
                closing = asyncio.ensure_future(
                    underlay.close(ChannelReplaced(None, "renewed after a quiet spell"))
                )
                closing.add_done_callback(_close_failed)
                await reopened.wait()
        except Exception as exc:  # noqa: BLE001 - a timeout, or the connection gone meanwhile
            log.warning(
                "the consumer's channel was closed to be renewed and is not open again yet",
                queue=self._queue.name,
                within_s=RENEW_WITHIN,
                error=repr(exc),
            )
            return False
        finally:
            channel.reopen_callbacks.discard(on_reopen)
        self.renewals += 1
        log.debug("consuming channel renewed after a quiet spell", queue=self._queue.name)
        return True

    async def stop(self, within: float) -> bool:
        """Take no new deliveries; wait at most ``within`` seconds for those in flight.
        False if some were still running (the broker redelivers them)."""
        log.info("stopping: no new messages, finishing those in flight", in_flight=self.in_flight)
        # A delivery whose task has not started yet must not start now: it would run after
        # the wait below and race the channel's close (handled, then redelivered and handled
        # again). Left unacked, it goes back to the queue untouched.
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + within
        if self._tag is not None:
            tag, self._tag = self._tag, None
            await self._cancel(tag, deadline)
        try:
            async with asyncio.timeout_at(deadline):
                await self._idle.wait()
        except TimeoutError:
            log.warning("shutdown timeout: unfinished messages will be redelivered", timeout=within)
            return False
        return True

    async def _cancel(self, tag: str, deadline: float) -> None:
        """Cancel the consumer within :data:`CANCEL_WITHIN`, leaving the rest of the budget to
        the deliveries in flight (:func:`cancel_consumer`)."""
        loop = asyncio.get_running_loop()
        await cancel_consumer(self._queue, tag, until=min(deadline, loop.time() + CANCEL_WITHIN))

    async def _tracked(self, message: AbstractIncomingMessage) -> None:
        self.delivered += 1
        if message.redelivered and self._renewed_at is not None:
            if asyncio.get_running_loop().time() - self._renewed_at < GIVEN_BACK_WITHIN:
                self.given_back += 1
        if self._stopping:
            trace.get_current_span().add_event("messaging.delivery.returned", _RETURNED)
            return
        self.in_flight += 1
        self._idle.clear()
        # aiormq cancels a channel's consumer tasks when the connection drops. Shielded, a
        # handler finishes what it started (a database transaction above all) instead of
        # stopping mid-way; its ack then finds the channel gone and the broker redelivers.
        handling = asyncio.ensure_future(self._on_message(message))
        handling.add_done_callback(self._finished)
        try:
            await asyncio.shield(handling)
        except asyncio.CancelledError:
            if not self._stopping:
                # A drop, not a stop. The instrumentation's CONSUMER span ends with this task:
                # give the handler a moment to finish inside it, so that what it records lands
                # on an open span. Only a moment: aiormq waits for this task before it closes
                # the connection (and reconnects), and a stop must stay bounded.
                await asyncio.wait([handling], timeout=HANDLER_GRACE)
            raise

    def _finished(self, handling: "asyncio.Future[None]") -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        if not handling.cancelled() and handling.exception() is not None:
            log.error("delivery handling failed", error=repr(handling.exception()))


def _close_failed(closing: "asyncio.Future[None]") -> None:
    """A renewal's close that failed (the connection dropped meanwhile: aio-pika's
    reconnection restores the channel), retrieved so that asyncio does not report it."""
    if not closing.cancelled() and closing.exception() is not None:
        log.debug("consuming channel's close for a renewal failed", error=repr(closing.exception()))


async def subscribe(
    queue: AbstractQueue,
    model: type[M],
    handler: Handler[M],
    *,
    publisher: Publisher,
    dead_letter_exchange: AbstractExchange,
    prefetch: int | None = None,
    routes: tuple[Route, ...] = (),
) -> Subscription:
    """Start consuming ``queue``: each delivery validated as ``model`` and given to
    ``handler``; what it returns is published, then the delivery is acked. ``prefetch`` is
    the channel's (None: no limit), for the watchdog (:meth:`Subscription.until_lost`);
    ``routes``, those the queue is bound by, bound again in quiet spells."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        await delivery.handle(
            message,
            model,
            handler,
            publisher=publisher,
            dead_letter_exchange=dead_letter_exchange,
            queue=queue.name,
        )

    subscription = Subscription(
        queue, on_message, publisher.meter, prefetch=prefetch, routes=routes
    )
    await subscription.start()
    return subscription


async def cancel_consumer(queue: AbstractQueue, tag: str, *, until: float) -> None:
    """Cancel a consumer, waiting at most until ``until`` (loop time). aio-pika takes it off the
    consumers a reconnect restores as the cancel starts, so it is off even when the cancel
    cannot go through: with the connection down, the cancel would wait for it to come back,
    and a stop would hang until the broker did; the consumer went with the channel then, and
    is not waited for at all. A broker that stopped answering, or that blocks the connection
    (a memory or disk alarm), never answers the cancel: hence the bound."""
    if queue.channel.is_closed:
        until = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout_at(until):
            await queue.cancel(tag)
    except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
        if isinstance(exc, TimeoutError) and not queue.channel.is_closed:
            log.warning("consumer not cancelled: the broker did not answer in time")
        else:
            log.warning(
                "consumer not cancelled: the broker connection is down, or its channel closed",
                error=repr(exc),
            )
