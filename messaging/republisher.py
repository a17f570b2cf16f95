"""Keep republishing a request whose publisher confirm never came, until one copy is confirmed.

When the connection breaks while a publish waits for its confirm, nobody knows whether the
broker took the message. The request/reply client first republishes it itself, within the
call's deadline; if that deadline passes, the caller answers 202 and hands the request here.
A copy is harmless, because the worker is idempotent by reservation id: a second copy of a
request the broker did take only replays the stored answer.

This is in memory and bounded: for ``KEEP_TRYING_FOR`` seconds, or until the process stops
(:meth:`Republisher.close`). Either way an ERROR line names each request given up on, so an
operator can see which 202s may never resolve.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError

from messaging.messages import Message
from messaging.publisher import Publisher
from messaging.topology import Route

log = structlog.get_logger(__name__)

# How long a request whose confirm never came is republished before it is given up on.
KEEP_TRYING_FOR = 120.0
# Seconds between attempts: from FIRST_PAUSE, doubled each time, at most MAX_PAUSE.
FIRST_PAUSE, MAX_PAUSE = 0.2, 2.0
# Seconds close() lets the republishing in progress finish.
CLOSE_WITHIN = 2.0

# Waits until the channel is usable or the monotonic deadline passes; False if it did not.
ReadyWait = Callable[[float], Awaitable[bool]]


class Republisher:
    def __init__(
        self, publisher: Publisher, ready: ReadyWait, keep_trying_for: float = KEEP_TRYING_FOR
    ) -> None:
        self._publisher = publisher
        self._ready = ready
        self._keep_trying_for = keep_trying_for
        self._tasks: dict[asyncio.Task[None], Message] = {}

    @property
    def in_progress(self) -> int:
        return len(self._tasks)

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
        deadline = loop.time() + self._keep_trying_for
        pause, attempts = FIRST_PAUSE, 0
        while loop.time() < deadline:
            if await self._ready(deadline):
                attempts += 1
                try:
                    # No reply_to: the asker has answered 202 already; the outcome is stored.
                    await self._publisher.publish(request, to, deadline=deadline)
                except DeliveryError as exc:  # returned (unroutable) or nacked
                    log.warning("republish refused; trying again", error=repr(exc))
                except CONNECTION_EXCEPTIONS as exc:  # unknown again (lost, no confirm in time)
                    log.warning("republish unconfirmed; trying again", error=repr(exc))
                else:
                    log.info(
                        "unconfirmed request republished and confirmed",
                        message_id=request.message_id,
                        attempts=attempts,
                    )
                    return
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, MAX_PAUSE)
        log.error(
            "gave up republishing an unconfirmed request; it may never be processed",
            message_id=request.message_id,
            attempts=attempts,
            after_s=self._keep_trying_for,
        )
