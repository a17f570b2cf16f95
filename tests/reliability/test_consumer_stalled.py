"""A consumer the broker keeps but sends nothing, while its queue holds ready messages.

A fault campaign deleted ``credit-check`` under load: in 4 of 14 tries RabbitMQ 3.10 sent no
cancel and kept the worker's consumer, with 64 deliveries unacked that never arrived and some
600 messages ready. The worker sat idle, and the API answered 202 to every request, until
someone restarted it. Its watchdog now gives such a consumer up after ``lasting.LOST_AFTER``
seconds (the worker exits 1, as for a consumer lost: ``test_queue_replaced.py``). Here the
wedge is made by hand: the consumer stays registered, and what the broker sends it no longer
reaches the worker. A consumer with nothing to take, or with no room for more, is not stalled.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from messaging import lasting
from messaging.subscriber import Subscription
from tests.waiting import eventually_async

PREFETCH = 2


@pytest.fixture
def quick_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lasting, "LOST_AFTER", 0.6)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.1)


@pytest.fixture
async def queue(amqp_url: str) -> AsyncIterator[AbstractQueue]:
    connection = await aio_pika.connect_robust(amqp_url)  # as the workers connect
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        yield await channel.declare_queue(f"stalled-{uuid.uuid4().hex[:8]}", auto_delete=True)
    finally:
        await connection.close()


async def _consuming(
    queue: AbstractQueue, handle: Callable[[AbstractIncomingMessage], Awaitable[None]]
) -> Subscription:
    subscription = Subscription(queue, handle, prefetch=PREFETCH)
    await subscription.start()
    return subscription


async def _publish(queue: AbstractQueue, count: int) -> None:
    for n in range(count):
        await queue.channel.default_exchange.publish(aio_pika.Message(b"%d" % n), queue.name)


async def _ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_consumer_sent_nothing_while_messages_wait_is_given_up(
    queue: AbstractQueue,
) -> None:
    subscription = await _consuming(queue, _ack)
    await _publish(queue, 3)
    await _until_delivered(subscription, 3)
    # The wedge: the broker still counts the consumer, and delivers to it, but nothing it
    # sends reaches the worker any more.
    underlay = await queue.channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    [tag] = underlay.consumers

    async def lost_on_the_way(_: object) -> None:
        return None

    underlay.consumers[tag] = lost_on_the_way
    await _publish(queue, PREFETCH + 3)
    lost = await asyncio.wait_for(subscription.until_lost(), 10)
    assert f"queue '{queue.name}' has held ready messages" in str(lost)
    assert subscription.delivered == 3


@pytest.mark.usefixtures("quick_watchdog")
async def test_an_idle_consumer_is_not_stalled(queue: AbstractQueue) -> None:
    subscription = await _consuming(queue, _ack)
    await _publish(queue, 2)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(subscription.until_lost(), lasting.LOST_AFTER * 4)
    assert subscription.delivered == 2


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_consumer_with_no_room_for_more_is_not_stalled(queue: AbstractQueue) -> None:
    """Its deliveries all held (a slow handler, a database outage): the broker rightly sends
    nothing more, and messages wait."""
    release = asyncio.Event()

    async def slow(message: AbstractIncomingMessage) -> None:
        await release.wait()
        await message.ack()

    subscription = await _consuming(queue, slow)
    await _publish(queue, PREFETCH + 3)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(subscription.until_lost(), lasting.LOST_AFTER * 4)
        assert subscription.in_flight == PREFETCH
    finally:
        release.set()
    await _until_delivered(subscription, PREFETCH + 3)


async def _until_delivered(subscription: Subscription, count: int) -> None:
    async for attempt in eventually_async(10, every=0.02):
        with attempt:
            assert subscription.delivered == count
