"""Publishes racing the broker's close of their channel must not cost the connection.

An exchange deleted under concurrent publishes: the broker closes the channel (404), and the
publishes queued behind the one that met it went out after aiormq's ``CloseOk``; the broker
then closed the whole connection (``504 CHANNEL_ERROR - expected 'channel.open'``), at every
deletion of a probe like this one (a review; a fault campaign saw the API's connection dropped
after 6 of 9 deletions). ``messaging/closing_channel.py`` refuses them instead.
"""

import asyncio
import inspect
import uuid

import aio_pika
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.channel import Channel

from messaging import closing_channel

PUBLISHERS, DELETIONS = 32, 5


async def test_publishes_racing_a_channel_close_do_not_drop_the_connection(
    amqp_url: str,
) -> None:
    closing_channel.install()  # as messaging.connection.connect does
    name = f"closing-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect_robust(amqp_url, reconnect_interval=1)
    reconnects: list[object] = []
    connection.reconnect_callbacks.add(lambda *_: reconnects.append(None))
    admin = await aio_pika.connect(amqp_url)
    stop = asyncio.Event()
    published = 0

    async def publish(exchange: aio_pika.abc.AbstractExchange) -> None:
        nonlocal published
        while not stop.is_set():
            try:
                await exchange.publish(aio_pika.Message(b"x"), "k")
                published += 1
            except CONNECTION_EXCEPTIONS:
                await asyncio.sleep(0.01)  # the channel is closing or reopening

    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(name, durable=True)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, "k")
        publishers = [asyncio.ensure_future(publish(exchange)) for _ in range(PUBLISHERS)]
        admin_channel = await admin.channel()
        for _ in range(DELETIONS):
            await asyncio.sleep(0.7)
            await admin_channel.exchange_delete(name)  # the robust channel declares it again
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*publishers)
        assert reconnects == [], f"the connection was dropped {len(reconnects)} times"
        assert published > 0
        await admin_channel.queue_delete(name)
        await admin_channel.exchange_delete(name)
    finally:
        stop.set()
        await connection.close()
        await admin.close()


def test_the_private_name_it_reads_is_aiormqs() -> None:
    """The guard reads aiormq 7.2's private close event; another version may rename it, and
    the guard would then silently check nothing."""
    attribute = closing_channel.CLOSE_EVENT.removeprefix("_Channel")
    assert f"self.{attribute}: asyncio.Event" in inspect.getsource(Channel.__init__)
