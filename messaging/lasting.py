"""Waiting until something has been wrong for a while: the workers' watchdogs.

A consumer the broker cancelled, or a publishing channel closed, is normal for a moment
(aio-pika restores both within a second or two) and a fault only when it lasts.
"""

import asyncio
from collections.abc import Awaitable, Callable


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
