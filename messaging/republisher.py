"""Keep republishing a request whose publisher confirm never came, until one copy is confirmed.

When the connection breaks while a publish waits for its confirm, nobody knows whether the
broker took the message. The request/reply client first republishes it itself, within the
call's deadline; if that deadline passes, the caller answers 202 and hands the request here.
A copy is harmless, because the worker is idempotent by reservation id: a second copy of a
request the broker did take only replays the stored answer.

This is in memory. It keeps trying for as long as the broker stays away or blocks publishers
(a 202 is a promise; a memory or disk alarm can last longer than any fixed window), until the
process stops (:meth:`Republisher.close`: an ERROR line names each request given up on, so an
operator can see which 202s may never resolve). It is bounded in size instead: at
``HOLD_AT_MOST`` requests it is :attr:`~Republisher.full`, and the client answers new requests
503 before publishing them (nothing queued, safe to retry) until it has room again.

Copies are few: an attempt waits for the channel to be restored (woken by the restore, not by
polling) and then for its confirm, for ``ATTEMPT_WITHIN`` or as long as the request has been
held, whichever is longer; a blocked broker, which takes no copy, gets one more copy each time
the wait doubles, not one every few seconds.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError

from messaging.messages import Message
from messaging.publisher import Publisher
from messaging.topology import Route

log = structlog.get_logger(__name__)

# Seconds an attempt waits for the channel and then for its confirm, at least: later attempts
# wait as long as the request has been held, so the copies of one request double their spacing.
ATTEMPT_WITHIN = 120.0
# Seconds between a failed attempt and the next: from FIRST_PAUSE, doubled each time, at most
# MAX_PAUSE (a broken channel is waited for, not polled: this paces refusals).
FIRST_PAUSE, MAX_PAUSE = 0.2, 5.0
# Requests held at most; a full republisher makes the client answer 503 before publishing.
HOLD_AT_MOST = 10_000
# Seconds close() lets the republishing in progress finish.
CLOSE_WITHIN = 2.0

# Waits until the channel is usable or the monotonic deadline passes; False if it did not.
ReadyWait = Callable[[float], Awaitable[bool]]


class Republisher:
    def __init__(self, publisher: Publisher, ready: ReadyWait) -> None:
        self._publisher = publisher
        self._ready = ready
        self._tasks: dict[asyncio.Task[None], Message] = {}

    @property
    def in_progress(self) -> int:
        return len(self._tasks)

    @property
    def full(self) -> bool:
        """Holding ``HOLD_AT_MOST`` requests: take no more until one is confirmed."""
        return len(self._tasks) >= HOLD_AT_MOST

    def keep_trying(self, request: Message, to: Route) -> None:
        """Republish ``request`` in the background until the broker confirms a copy."""
        task = asyncio.create_task(self._until_confirmed(request, to))
        self._tasks[task] = request
        task.add_done_callback(self._finished)

    async def close(self, within: float = CLOSE_WITHIN) -> None:
        """Let the republishing in progress finish for ``within`` seconds, then give up on the
        rest (an ERROR line each)."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(tuple(self._tasks), timeout=within)
        for task in unfinished:
            log.error(
                "shutting down: gave up republishing an unconfirmed request",
                message_id=self._tasks[task].message_id,
            )
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        request = self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "republishing failed; the request may never be processed",
                message_id=request.message_id if request is not None else None,
                error=repr(task.exception()),
            )

    async def _until_confirmed(self, request: Message, to: Route) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time()
        pause, attempts = FIRST_PAUSE, 0
        while True:
            now = loop.time()
            deadline = now + max(ATTEMPT_WITHIN, now - since)
            if await self._ready(deadline):
                attempts += 1
                try:
                    # No reply_to: the asker has answered 202 already; the outcome is stored.
                    await self._publisher.publish(request, to, deadline=deadline)
                except DeliveryError as exc:  # returned (unroutable) or nacked
                    log.warning(
                        "republish refused; trying again",
                        message_id=request.message_id,
                        error=repr(exc),
                    )
                except CONNECTION_EXCEPTIONS as exc:  # unknown again (lost, no confirm in time)
                    log.warning(
                        "republish unconfirmed; trying again",
                        message_id=request.message_id,
                        error=repr(exc),
                    )
                else:
                    log.info(
                        "unconfirmed request republished and confirmed",
                        message_id=request.message_id,
                        attempts=attempts,
                        held_s=round(loop.time() - since, 1),
                    )
                    return
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
