"""The benchmark's own RabbitMQ virtual host, so it never meets anyone else's messages.

The services declare fixed queue names (``credit-check``, ``fulfilment``), so the only way
to keep a benchmark away from a developer's running worker or a test run is a vhost of its
own: made with ``rabbitmqctl`` (when the broker is local and the tool is there), removed at
the end with everything in it. Without ``rabbitmqctl`` the configured vhost is used as is
and the benchmark says so.
"""

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress

import aio_pika
from yarl import URL

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@asynccontextmanager
async def vhost(amqp_url: str) -> AsyncIterator[tuple[str, str | None]]:
    """Yields (url with the benchmark's vhost, vhost name or None if it had to share)."""
    url = URL(amqp_url)
    if url.host not in LOCAL_HOSTS or shutil.which("rabbitmqctl") is None:
        yield amqp_url, None
        return
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_ctl, "add_vhost", name)
    try:
        await asyncio.to_thread(
            _ctl, "set_permissions", "-p", name, url.user or "guest", ".*", ".*", ".*"
        )
        yield str(url.with_path("/" + name)), name
    finally:
        with suppress(subprocess.SubprocessError, OSError):
            await asyncio.to_thread(_ctl, "delete_vhost", name)


async def queue_depths(amqp_url: str, names: Iterable[str]) -> dict[str, int]:
    """Ready messages per queue (a queue that does not exist counts as 0)."""
    depths: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
            except aio_pika.exceptions.ChannelClosed:
                depths[name] = 0
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return depths


async def consumers(amqp_url: str, name: str) -> int:
    """Consumers attached to a queue (0 if it does not exist yet)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def wait_drained(amqp_url: str, names: Iterable[str], within: float) -> bool:
    """Wait until every queue is empty; False if that did not happen in time."""
    queues = list(names)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        depths = await queue_depths(amqp_url, queues)
        if not any(depths.values()):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.2)
