"""What the benchmark asks of the broker: queue depths and consumer counts.

It runs in a virtual host of its own (:func:`devtools.vhosts.private_vhost`, made by
``python -m bench``), so it never meets a developer's running worker or a test run.
"""

from collections.abc import Iterable

import aio_pika

from devtools.waiting import poll_async


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
    depths = await poll_async(
        lambda: queue_depths(amqp_url, queues),
        until=lambda depths: not any(depths.values()),
        within=within,
        every=0.2,
    )
    return not any(depths.values())
