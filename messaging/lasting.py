"""Waiting until something has been wrong for a while: the wait the watchdogs share (the
workers' consumer and publishing channel, the API's channel).

A consumer the broker cancelled, or a publishing channel closed, is normal for a moment
(aio-pika restores both within a second or two) and a fault only when it lasts.
"""

import asyncio
from collections.abc import Awaitable, Callable

# Seconds a consumer or a publishing channel may be gone (while the connection is up) before
# the process gives it up for lost and exits, and how often that is checked: it exits 30 to
# 35 s after the loss. aio-pika restores either within a second or two.
LOST_AFTER, CHECK_EVERY = 30.0, 5.0


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
