"""Waiting until something has been wrong for a while: the wait the watchdogs share (the
workers' consumer and publishing channel, the API's channel).

A consumer the broker cancelled, or a publishing channel closed, is normal for a moment
(aio-pika restores both within a second or two) and a fault only when it lasts.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustChannel

log = structlog.get_logger(__name__)

# Seconds a consumer or a channel may be gone (while the connection is up) before the process
# gives it up for lost and exits; and how often the consumer checks (missing, stalled, quiet)
# run, so a lost consumer ends the process 30 to 35 s after the loss (a closed channel is
# checked every RESTORE_EVERY, below: about 31 s). aio-pika restores either within a second or two.
LOST_AFTER, CHECK_EVERY = 30.0, 5.0
# Seconds between two tries at restoring a channel closed while the connection is up (one
# closed until a restart goes through: the API answers 503 meanwhile, a worker holds what it
# publishes), and how long one try may take. Its WARNING is said at most every CHECK_EVERY.
RESTORE_EVERY, RESTORE_WITHIN = 1.0, 5.0


async def until_lasting(wrong: Callable[[], Awaitable[bool]], seconds: float, every: float) -> None:
    """Returns once ``wrong()`` has been true at every check, ``every`` seconds apart, for
    ``seconds``; a check that finds it false starts afresh. Runs until cancelled otherwise."""
    loop = asyncio.get_running_loop()
    since: float | None = None
    while True:
        await asyncio.sleep(every)
        if not await wrong():
            since = None
        elif since is None:
            since = loop.time()
        elif loop.time() - since >= seconds:
            return


async def until_closed_for_good(
    channel: AbstractChannel | None, connected: Callable[[], bool], what: str
) -> None:
    """Returns once ``channel`` has been closed while ``connected()`` for :data:`LOST_AFTER`
    seconds, trying its restore every :data:`RESTORE_EVERY` seconds meanwhile
    (:func:`closed_while_connected`); runs until cancelled otherwise."""
    await until_lasting(closed_while_connected(channel, connected, what), LOST_AFTER, RESTORE_EVERY)


def closed_while_connected(
    channel: AbstractChannel | None, connected: Callable[[], bool], what: str
) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`until_lasting`: ``channel`` is closed while ``connected()`` (the
    connection is up; a reconnection still reopening its channels counts as up too, and a
    restore tried then waits for aio-pika's, or does nothing: ``RobustChannel.restore`` holds a
    lock and returns once restored). aio-pika restores a robust channel once; one whose
    restore failed (a declaration refused, a deletion racing it) stays closed for good, so
    each check tries the restore once more, and logs why it failed (at most every
    :data:`CHECK_EVERY` seconds: a check comes every :data:`RESTORE_EVERY`)."""
    said_at: float | None = None

    async def closed() -> bool:
        nonlocal said_at
        if channel is None or not channel.is_closed or not connected():
            said_at = None
            return False
        if isinstance(channel, AbstractRobustChannel):
            try:
                async with asyncio.timeout(RESTORE_WITHIN):
                    await channel.restore()
            except Exception as exc:  # noqa: BLE001 - tried again at the next check
                now = asyncio.get_running_loop().time()
                if said_at is None or now - said_at >= CHECK_EVERY:
                    said_at = now
                    log.warning(f"the {what} channel could not be restored", error=repr(exc))
        return channel.is_closed

    return closed
