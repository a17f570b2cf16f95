"""Waiting, bounded, until a channel can take a request and route its reply.

aio-pika's robust channel reopens after a reconnect *before* it re-registers its consumers;
``RobustChannel.ready()`` returns only once the queues and consumers are restored. A request
published in between would carry ``reply_to=amq.rabbitmq.reply-to`` with no reply consumer on
the channel, and RabbitMQ refuses it (406 "fast reply consumer does not exist").

The wait is bounded twice: by the caller's deadline, and by ``RECONNECT_GRACE`` after the
channel went down, so a short reconnect is ridden out while a long outage answers at once.
"""

import asyncio
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustChannel

# Seconds after the channel went down during which callers wait for it to come back
# (aio-pika tries to reconnect every second).
RECONNECT_GRACE = 3.0


class ChannelReadiness:
    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._down_since: float | None = None
        # Restored since it last closed (it starts open); see ``restored``.
        self._restored = True

    def watch(self) -> None:
        self._channel.close_callbacks.add(self._went_down)
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.add(self._came_back)

    def unwatch(self) -> None:
        self._channel.close_callbacks.discard(self._went_down)
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.discard(self._came_back)

    @property
    def restored(self) -> bool:
        """Open, and restored since it last closed (while watched). A restore the broker
        refuses (a queue declared again with other arguments) opens the channel for the few
        milliseconds its declarations take before the broker closes it again; the watchdogs
        try one every second (:mod:`messaging.lasting`), and open is not ready then."""
        return self._restored and not self._channel.is_closed

    async def wait(self, deadline: float, *, grace: bool = True) -> bool:
        """True once the channel is open with its consumers restored; False if that did not
        happen by ``deadline`` (loop time) or within the grace after it went down.
        ``grace=False`` waits for ``deadline`` alone: for a background task that waits out a
        long outage (:mod:`messaging.republisher`), woken as soon as the channel is restored.

        A caller's deadline already past is False at once: ``asyncio.timeout_at`` fires only
        when the wait suspends, and ``RobustChannel.ready()`` on an open channel never does.
        The grace is not checked that way: once it has run out, an open channel must still be
        found ready (which ends the grace), and a closed one times out at once."""
        if asyncio.get_running_loop().time() >= deadline:
            return False
        if not isinstance(self._channel, AbstractRobustChannel):
            return not self._channel.is_closed
        if grace and self._down_since is not None:
            deadline = min(deadline, self._down_since + RECONNECT_GRACE)
        try:
            async with asyncio.timeout_at(deadline):
                await self._channel.ready()
        except TimeoutError:
            return False
        self._down_since = None
        return True

    def _came_back(self, *_: Any) -> None:
        self._restored = True

    def _went_down(self, *_: Any) -> None:
        self._restored = False
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
