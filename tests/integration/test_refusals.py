"""When a channel refused by the broker is replaced (``messaging/refusals.py``), against a real
quorum queue that is full (``max-length`` with ``overflow: reject-publish``) and a clock the
test moves."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import ChannelInvalidStateError, DeliveryError

from messaging.delivery import _settle
from messaging.refusals import FORGET_AFTER, REPLACE_AFTER, Refusals
from tests.infra import Broker
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FullQueue:
    """A quorum queue held at its limit, and a robust channel that publishes to it."""

    def __init__(self, channel: AbstractRobustChannel, name: str) -> None:
        self.channel, self.name = channel, name
        self.reopened = 0
        channel.reopen_callbacks.add(self._count)

    def _count(self, *_: object) -> None:
        self.reopened += 1

    async def refused(self, refusals: Refusals) -> None:
        """Publish once; the broker must refuse it."""
        message = aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        with pytest.raises(DeliveryError):
            await refusals.watch(
                self.channel.default_exchange.publish(message, self.name, timeout=5), self.name
            )


@pytest.fixture
async def full_queue(amqp_url: str, broker: Broker) -> AsyncIterator[FullQueue]:
    name = f"refusals-{uuid.uuid4().hex[:8]}"
    limit = json.dumps({"max-length": 1, "overflow": "reject-publish"})
    broker.rabbitmqctl(
        "set_policy", "-p", broker.vhost, "--apply-to", "queues", name, f"^{name}$", limit
    )
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        async for attempt in eventually_async(10, every=0.2):  # until the policy applies
            with attempt:
                assert not await _taken(channel, name)
        yield FullQueue(channel, name)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
        broker.rabbitmqctl("clear_policy", "-p", broker.vhost, name)


async def _taken(channel: AbstractRobustChannel, queue: str) -> bool:
    message = aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    try:
        await channel.default_exchange.publish(message, queue, timeout=5)
    except DeliveryError:
        return False
    return True


async def _replaced(full: FullQueue, before: int) -> bool:
    await asyncio.sleep(0.3)  # a replacement closes and reopens the channel in the background
    await full.channel.ready()
    return full.reopened > before


async def test_a_channel_is_replaced_after_three_refusals_over_ten_seconds(
    full_queue: FullQueue,
) -> None:
    clock = Clock()
    refusals = Refusals(full_queue.channel, clock=clock)
    await full_queue.refused(refusals)
    clock.now += REPLACE_AFTER + 2
    await full_queue.refused(refusals)  # two refusals 12 s apart: not yet
    assert not await _replaced(full_queue, 0)
    clock.now += 1
    await full_queue.refused(refusals)  # the third
    async for attempt in eventually_async(10, every=0.2):
        with attempt:
            assert await _replaced(full_queue, 0)
    # On the new channel the count starts afresh (the queue is still full: refused again).
    clock.now += REPLACE_AFTER + 5
    await full_queue.refused(refusals)
    assert not await _replaced(full_queue, 1)


async def test_refusals_after_a_quiet_spell_start_a_new_streak(full_queue: FullQueue) -> None:
    clock = Clock()
    refusals = Refusals(full_queue.channel, clock=clock)
    await full_queue.refused(refusals)
    await full_queue.refused(refusals)
    clock.now += FORGET_AFTER + 1  # quiet: the next refusal is a new streak's first
    await full_queue.refused(refusals)
    clock.now += REPLACE_AFTER - 1
    await full_queue.refused(refusals)
    await full_queue.refused(refusals)
    assert not await _replaced(full_queue, 0)
    clock.now += 2  # the new streak has lasted 11 s
    await full_queue.refused(refusals)
    async for attempt in eventually_async(10, every=0.2):
        with attempt:
            assert await _replaced(full_queue, 0)


async def test_a_delivery_whose_publishing_channel_was_lost_goes_back_to_the_queue(
    amqp_url: str,
) -> None:
    """A worker publishes on a channel apart from the one it consumes on. When a retry copy or
    a dead letter finds that publishing channel closed (replaced, say), the delivery's own
    channel is still open: it was taken for gone, the message left unacked on a live
    consumer until the worker restarted (a fault campaign). It is requeued now."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"x"), queue.name)
        first = await queue.get(timeout=5, fail=True)
        assert first is not None and not first.redelivered

        async def publish_on_a_closed_channel() -> None:
            raise ChannelInvalidStateError("the publishing channel is closed")

        await _settle(publish_on_a_closed_channel(), first, retrying=True)
        again = await queue.get(timeout=5, fail=False)
        assert again is not None and again.redelivered and again.body == b"x"
        await again.ack()
    finally:
        await connection.close()
