"""A consumer the broker keeps but sends nothing.

A fault campaign deleted ``credit-check`` under load: in 4 of 14 tries RabbitMQ 3.10 sent no
cancel and kept the worker's consumer, with 64 deliveries unacked that never arrived and some
600 messages ready. The worker sat idle, and the API answered 202 to every request, until
someone restarted it. With fewer messages behind such a wedge than the prefetch, the consumer
holds them all unacked, none is ready, and nothing tells it from an idle one (a re-check wedged
two consumers so, 27 requests behind each).

So a consumer sent nothing, with nothing in flight, for ``lasting.LOST_AFTER`` seconds gets its
channel closed and opened again: the broker takes back what the old channel held, and the
consumer gets it on the new one. With a delivery in flight, which no renewal may cut off, the
older check stays: ready messages and nothing delivered for ``lasting.LOST_AFTER`` seconds,
and the worker exits 1 (as for a consumer lost: ``test_queue_replaced.py``). Here the wedge is
made by hand: the consumer stays registered, and what the broker sends it no longer reaches the
worker. The queues are quorum queues with a delivery limit, as the workers'.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aio_pika
import aiormq
import pytest
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from devtools.vhosts import private_vhost
from messaging import lasting, subscriber, topology
from messaging.connection import is_up
from messaging.envelope import encode
from messaging.messages import ReservationRequested
from messaging.subscriber import ConsumerLost, Subscription
from store.settings import StoreSettings
from tests import infra
from tests.logs import capture_logs_of
from tests.system import (
    channel_of_its_own,
    configure_env,
    credits_of,
    publishing_with_empty_dead_letters,
    until_consuming,
    vhost_tool,
)
from tests.waiting import eventually_async
from workers.credit_check.__main__ import WORKER
from workers.runtime import serve

PREFETCH = 2


@pytest.fixture
def quick_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lasting, "LOST_AFTER", 0.6)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.1)
    monkeypatch.setattr(lasting, "RESTORE_EVERY", 0.1)
    monkeypatch.setattr(subscriber, "GIVEN_BACK_WITHIN", 0.5)


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)  # as the workers connect
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def queue(
    connection: AbstractRobustConnection, amqp_url: str
) -> AsyncIterator[AbstractQueue]:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    declared = await channel.declare_queue(
        f"stalled-{uuid.uuid4().hex[:8]}",
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 5},
    )
    try:
        yield declared
    finally:
        async with channel_of_its_own(amqp_url) as other:
            await other.queue_delete(declared.name)


async def _consuming(
    queue: AbstractQueue, handle: Callable[[AbstractIncomingMessage], Awaitable[None]]
) -> Subscription:
    subscription = Subscription(queue, handle, prefetch=PREFETCH)
    await subscription.start()
    return subscription


def _watching(
    subscription: Subscription, connection: AbstractRobustConnection
) -> "asyncio.Future[ConsumerLost]":
    return asyncio.ensure_future(subscription.until_lost(lambda: is_up(connection)))


async def _publish(queue: AbstractQueue, count: int) -> None:
    for n in range(count):
        await queue.channel.default_exchange.publish(aio_pika.Message(b"%d" % n), queue.name)


async def _ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_wedged_consumer_holding_fewer_than_its_prefetch_gets_them_on_a_new_channel(
    queue: AbstractQueue, connection: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = capture_logs_of(monkeypatch, subscriber)
    handled: list[tuple[bytes, object]] = []

    async def ack(message: AbstractIncomingMessage) -> None:
        handled.append((message.body, message.headers.get("x-delivery-count")))
        await message.ack()

    subscription = await _consuming(queue, ack)
    await _publish(queue, 1)
    await _until_delivered(subscription, 1)
    await _wedge(queue)
    await _publish(queue, PREFETCH - 1)  # held by the wedged consumer: none of it is ready
    watchdog = _watching(subscription, connection)
    try:
        await _until_delivered(subscription, PREFETCH)
        async for attempt in eventually_async(10, every=0.02):
            with attempt:  # reported once the renewal's window is over
                assert [
                    entry["given_back"] for entry in logs.entries if "gave back" in entry["event"]
                ] == [1]
        assert not watchdog.done(), "a renewed consumer is not lost"
    finally:
        watchdog.cancel()
    assert subscription.renewals >= 1
    assert subscription.given_back == 1
    # Each published once, handled once; the one given back came back once, and the quorum
    # queue counted that return (its delivery limit is 5).
    assert handled == [(b"0", None), (b"0", 1)]
    assert subscription.delivered == PREFETCH
    assert (await queue.declare()).message_count == 0


@pytest.mark.usefixtures("quick_watchdog")
async def test_an_idle_consumer_is_renewed_and_still_consumes(
    queue: AbstractQueue, connection: AbstractRobustConnection
) -> None:
    subscription = await _consuming(queue, _ack)
    await _publish(queue, 2)
    watchdog = _watching(subscription, connection)
    try:
        async for attempt in eventually_async(20, every=0.05):
            with attempt:
                assert subscription.renewals >= 2
        assert not watchdog.done(), "an idle consumer is not lost"
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
    await cast(AbstractRobustChannel, queue.channel).ready()
    assert (subscription.delivered, subscription.given_back) == (2, 0)
    await _publish(queue, 2)
    await _until_delivered(subscription, 4)


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_delivery_in_flight_is_never_cut_off_by_a_renewal(
    queue: AbstractQueue, connection: AbstractRobustConnection
) -> None:
    """A slow handler with room for more and nothing else to take: its channel stays open,
    and its delivery is neither redelivered nor handled twice.

    It hung once until pytest-timeout's 120 s, in a full run, and in none of 46 runs since
    (alone, or its file under CPU load); the outer bound turns a hang into a TimeoutError
    whose traceback names the step that hung."""
    async with asyncio.timeout(60):
        slow = _Slow()
        subscription = await _consuming(queue, slow)
        await _publish(queue, 1)
        watchdog = _watching(subscription, connection)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(watchdog), lasting.LOST_AFTER * 6)
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        assert (subscription.in_flight, subscription.renewals) == (1, 0)
        slow.release.set()
        async for attempt in eventually_async(10, every=0.02):
            with attempt:
                assert subscription.in_flight == 0
        assert subscription.delivered == 1
        assert (await queue.declare()).message_count == 0


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_consumer_sent_nothing_while_messages_wait_is_given_up(
    queue: AbstractQueue, connection: AbstractRobustConnection
) -> None:
    """With a delivery in flight, which no renewal may cut off (a slow handler, here)."""
    slow = _Slow()
    subscription = await _consuming(queue, slow)
    await _publish(queue, 1)
    await _until_delivered(subscription, 1)
    await _wedge(queue)
    await _publish(queue, PREFETCH + 3)
    try:
        lost = await asyncio.wait_for(_watching(subscription, connection), 10)
    finally:
        slow.release.set()
    assert f"queue '{queue.name}' has held ready messages" in str(lost)
    assert (subscription.delivered, subscription.renewals) == (1, 0)


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_consumer_with_no_room_for_more_is_not_stalled(
    queue: AbstractQueue, connection: AbstractRobustConnection
) -> None:
    """Its deliveries all held (a slow handler, a database outage): the broker rightly sends
    nothing more, and messages wait."""
    slow = _Slow()
    subscription = await _consuming(queue, slow)
    await _publish(queue, PREFETCH + 3)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_watching(subscription, connection), lasting.LOST_AFTER * 4)
        assert subscription.in_flight == PREFETCH
    finally:
        slow.release.set()
    await _until_delivered(subscription, PREFETCH + 3)


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_channel_that_cannot_be_opened_again_gives_the_consumer_up(
    queue: AbstractQueue, connection: AbstractRobustConnection, amqp_url: str
) -> None:
    """The channel declared an exchange that someone then declared again with another type:
    opening the channel again declares it again, the broker refuses, and the channel stays
    closed, though each check tries once more. The worker exits, so that a restart says why,
    rather than take nothing."""
    name = f"renewal-conflict-{uuid.uuid4().hex[:8]}"
    await queue.channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
    subscription = await _consuming(queue, _ack)
    async with channel_of_its_own(amqp_url) as other:
        await other.exchange_delete(name)
        await other.declare_exchange(name, aio_pika.ExchangeType.FANOUT)
        try:
            lost = await asyncio.wait_for(_watching(subscription, connection), 10)
        finally:
            await other.exchange_delete(name)
    assert f"the channel consuming queue '{queue.name}' has been closed for" in str(lost)
    assert queue.channel.is_closed
    assert subscription.renewals == 0


class _Slow:
    """A handler that acks each delivery once released (a slow handler, a database outage)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        await self.release.wait()
        await message.ack()


@pytest.mark.usefixtures("quick_watchdog")
async def test_a_queue_deleted_without_a_cancel_is_declared_again_by_a_renewal(
    queue: AbstractQueue,
    connection: AbstractRobustConnection,
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ 3.10 sometimes sends no cancel for a deleted queue: the consumer stays
    registered on an open channel, so it is not missing, and the watchdog's question got a
    404, which it counted as no answer: nothing fired, and the worker sat silent for minutes
    (a review deleted ``credit-check`` five times under load). Here the cancel is lost on the
    way."""
    logs = capture_logs_of(monkeypatch, subscriber)
    subscription = await _consuming(queue, _ack)
    underlay = await queue.channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    handle_cancel = underlay._on_cancel_frame

    async def no_cancel_arrives(frame: Any) -> None:
        if not isinstance(frame, aiormq.spec.Basic.Cancel):
            await handle_cancel(frame)

    monkeypatch.setattr(underlay, "_on_cancel_frame", no_cancel_arrives)
    async with channel_of_its_own(amqp_url) as other:
        await other.queue_delete(queue.name)
    watchdog = _watching(subscription, connection)
    try:
        async for attempt in eventually_async(10, every=0.05):
            with attempt:
                assert await _exists(amqp_url, queue.name)
        await cast(AbstractRobustChannel, queue.channel).ready()
        await _publish(queue, 1)
        await _until_delivered(subscription, 1)
        assert not watchdog.done(), "a consumer whose queue came back is not lost"
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
    assert any("is gone" in entry["event"] for entry in logs.entries), logs.entries


async def _exists(amqp_url: str, name: str) -> bool:
    async with channel_of_its_own(amqp_url) as asking:
        try:
            await asking.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
    return True


async def _wedge(queue: AbstractQueue) -> None:
    """The broker still counts the consumer, and delivers to it, but nothing it sends reaches
    the worker any more."""
    underlay = await queue.channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    [tag] = underlay.consumers

    async def lost_on_the_way(_: object) -> None:
        return None

    underlay.consumers[tag] = lost_on_the_way


async def _until_delivered(subscription: Subscription, count: int) -> None:
    async for attempt in eventually_async(10, every=0.02):
        with attempt:
            assert subscription.delivered == count


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_an_idle_worker_renews_its_channel_declaring_its_own_queue_alone(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The credit-check worker, idle: its consuming channel is renewed again and again, and a
    renewal declares the worker's own queue, nothing else. An operator deleted the dead-letter
    queue meanwhile; it stays deleted (it came back within a renewal when the consuming
    channel declared the whole topology). Then a request is still handled, once."""
    monkeypatch.setattr(lasting, "LOST_AFTER", 0.6)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.1)
    monkeypatch.setattr(lasting, "RESTORE_EVERY", 0.1)
    logs = capture_logs_of(monkeypatch, subscriber)
    with private_vhost(amqp_url, vhost_tool(broker), "renewed") as own_vhost:
        configure_env(monkeypatch, own_vhost, store_settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(serve(WORKER, stop))
        try:
            async with publishing_with_empty_dead_letters(own_vhost) as declared:
                channel = declared.queues[topology.CREDIT_CHECK.name].channel
                await until_consuming(channel, topology.CREDIT_CHECK)
                await channel.queue_delete(topology.DEAD_LETTERS.name)
                async for attempt in eventually_async(20, every=0.1):
                    with attempt:
                        renewed = [
                            e for e in logs.entries if e["event"].startswith("consuming chan")
                        ]
                        assert len(renewed) >= 3
                async with channel_of_its_own(own_vhost) as asking:
                    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                        await asking.declare_queue(topology.DEAD_LETTERS.name, passive=True)
                request = ReservationRequested(
                    reservation_id=uuid.uuid4(), username="alice", item_id="book-1"
                )
                await channel.default_exchange.publish(
                    encode(request, persistent=True), topology.CREDIT_CHECK.name
                )
                async for attempt in eventually_async(15, every=0.1):
                    with attempt:
                        assert await credits_of(store_settings) == 90
                assert not worker.done(), "an idle worker is not lost"
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
    assert [e for e in logs.entries if e["log_level"] in ("warning", "error")] == []
