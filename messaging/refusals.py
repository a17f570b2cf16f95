"""A channel the broker goes on refusing publishes on: replaced by a new one.

A quorum queue with ``max-length`` and ``overflow: reject-publish`` nacks what is published to
it while it is full, and tells each publishing channel when it may publish again. If an
operator removes the limit while the queue is over it, that word never comes (seen on RabbitMQ
3.10): every publish on the channel is nacked from then on, for good, while a new channel's
are taken. The API answered 503 to every reservation until it was restarted.

So once a channel's publishes to one destination have been nacked for :data:`REPLACE_AFTER`
seconds, at least :data:`REFUSALS_AT_LEAST` times and with none taken in between, the channel
is closed, and aio-pika's robust channel opens
a new one with its queues, exchanges and consumers, as after a channel error from the broker.
Whoever watches the channel sees it close and come back: the API's pending calls end as queued
(202). A worker publishes on a channel of its own (:meth:`messaging.broker.Broker.open`), so
its deliveries, and the events it holds for them, stay where they are. Under a queue that
really is full, this costs a new channel every :data:`REPLACE_AFTER` seconds and nothing
else: its publishes are refused too. A return (unroutable) is not a refusal of the channel,
and does not count. A refusal more than :data:`FORGET_AFTER` seconds after the one before it,
or on a channel opened since, starts a new streak: a nack now and another after a quiet spell
are not a channel refused for good, and a replacement ends the API's pending calls.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustChannel
from aio_pika.exceptions import ChannelClosed, DeliveryError, PublishError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds of nothing but nacks for one destination, and how many, before the channel is
# replaced; a gap longer than FORGET_AFTER between two of them starts afresh.
REPLACE_AFTER = 10.0
REFUSALS_AT_LEAST = 3
FORGET_AFTER = 30.0
# Seconds a channel's close may take (the broker's close-ok), at most.
CLOSE_WITHIN = 5.0


@dataclass
class _Streak:
    first: float
    last: float = 0.0
    count: int = 0


class ChannelReplaced(ChannelClosed):
    """What the refused channel is closed with: a channel closed, to whoever was waiting on it
    (a publish's confirm: unknown outcome, as after a drop). Not a cancellation: aio-pika's
    robust channel takes a cancelled close for its connection's and leaves the reopening to it."""


class Refusals:
    """The nacks in a row on one channel, per destination (a queue's refusal says nothing of
    another's), and the channel's replacement when they last."""

    def __init__(
        self,
        channel: AbstractChannel | None,
        *,
        replace_after: float = REPLACE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._replace_after = replace_after
        self._clock = clock
        # Per destination, the streak of nacks since a publish to it was last taken.
        self._streaks: dict[str, _Streak] = {}
        self._replacing: asyncio.Task[None] | None = None
        self._replaced_at: float | None = None  # at most one replacement per replace_after
        if isinstance(channel, AbstractRobustChannel):  # a new channel starts afresh
            channel.reopen_callbacks.add(self._forget_all)

    async def watch(self, publishing: Awaitable[T], to: str) -> T:
        """Await one publish to ``to`` (and what follows it): a nack counts, a publish taken
        ends the streak, and any other failure leaves it as it is."""
        try:
            done = await publishing
        except PublishError:  # returned: the channel is fine, the route is not
            raise
        except DeliveryError:
            self._refused(to)
            raise
        if self._streaks:
            self._streaks.pop(to, None)
        return done

    def _refused(self, to: str) -> None:
        now = self._clock()
        streak = self._streaks.get(to)
        if streak is None or now - streak.last > FORGET_AFTER:
            streak = self._streaks[to] = _Streak(now)
        streak.last, streak.count = now, streak.count + 1
        if (
            now - streak.first >= self._replace_after
            and streak.count >= REFUSALS_AT_LEAST
            and self._can_replace(now)
        ):
            # Afresh at once: the refusals on the channel being reopened are the new one's,
            # and a second replacement then closed it mid-restore, for good (a fault campaign).
            self._streaks.clear()
            self._replaced_at = now
            self._replacing = asyncio.ensure_future(self._replace(to))

    def _forget_all(self, *_: Any) -> None:
        self._streaks.clear()

    def _can_replace(self, now: float) -> bool:
        return (
            isinstance(self._channel, AbstractRobustChannel)
            and not self._channel.is_closed
            and (self._replacing is None or self._replacing.done())
            and (self._replaced_at is None or now - self._replaced_at >= self._replace_after)
        )

    async def _replace(self, to: str) -> None:
        assert self._channel is not None
        log.warning(
            "the broker refuses every publish on this channel: opening a new one",
            destination=to,
            refused_for_s=self._replace_after,
        )
        try:
            underlay = await self._channel.get_underlay_channel()
            async with asyncio.timeout(CLOSE_WITHIN):
                await underlay.close(ChannelReplaced(None, "every publish refused"))
        except Exception as exc:  # the connection went first: its own recovery takes over
            log.warning("the refused channel was not closed", error=repr(exc))
