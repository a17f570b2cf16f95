"""A message given back to its queue unsettled, again and again, is not parked by the broker.

RabbitMQ before 4.3 counts every return of a delivery against the quorum queue's
``x-delivery-limit`` (5): a connection dropped, or a worker stopped, while it held the message.
A review's database outage with eight connection drops, and six restarts of a worker holding
an event the broker refused, had the broker dead-letter charged reservations
(``delivery_limit``). A copy returned ``RENEW_AFTER_RETURNS`` times is now published afresh
before it is handled (``messaging.retry``)."""

import asyncio
import json
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from aio_pika.exceptions import DeliveryError

from messaging import delivery, subscriber, topology
from messaging.broker import Broker
from messaging.connection import open_channel
from messaging.envelope import encode
from messaging.messages import ReservationRequested
from messaging.publisher import Publisher
from messaging.retry import RENEW_AFTER_RETURNS, RETURNS_LIMIT, returns_of
from tests import infra
from tests.logs import capture_logs_of
from tests.system import channel_of_its_own, get_within, purge_work_queues
from tests.waiting import eventually_async

DROPS = 2 * topology.DELIVERY_LIMIT


async def test_a_message_given_back_again_and_again_is_published_afresh_not_parked(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriber, "HANDLER_GRACE", 0.05)
    logs = capture_logs_of(monkeypatch, delivery)
    await purge_work_queues(amqp_url)
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    async with channel_of_its_own(amqp_url) as channel:
        await channel.default_exchange.publish(
            encode(request, persistent=True), topology.CREDIT_CHECK.name
        )
    held: list[ReservationRequested] = []
    release = asyncio.Event()

    async def holding(payload: ReservationRequested) -> None:
        held.append(payload)  # held, as through a database outage or an event refused
        await release.wait()

    try:
        for drop in range(DROPS):
            connection = await aio_pika.connect_robust(amqp_url)
            channel, declared = await open_channel(connection, prefetch=10)
            broker = Broker(channel, declared, Publisher.on(channel, declared))
            await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, holding)
            async for attempt in eventually_async(10, every=0.02):
                with attempt:
                    assert len(held) > drop, f"not delivered again after {drop} drops"
            await connection.close()  # cut off while it holds the message: given back
    finally:
        release.set()
        await asyncio.sleep(0.1)  # the held handlers end; their acks find the channels gone
    assert {payload.reservation_id for payload in held} == {request.reservation_id}
    async with channel_of_its_own(amqp_url) as channel:
        dead = await _declared(channel, topology.DEAD_LETTERS)
        assert dead.declaration_result.message_count == 0
        queue = await _declared(channel, topology.CREDIT_CHECK)
        message = await queue.get(timeout=5)
        this_copy, returned = returns_of(message)
        assert this_copy < RENEW_AFTER_RETURNS and returned >= DROPS - 1, message.headers
        await message.ack()
    renewals = [e for e in logs.entries if "afresh" in e["event"]]
    assert len(renewals) >= DROPS // RENEW_AFTER_RETURNS - 1, logs.entries
    await purge_work_queues(amqp_url)


async def test_a_message_given_back_past_the_returns_limit_is_dead_lettered_saying_so(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop for a message that kills its worker: the returns of all its copies."""
    monkeypatch.setattr(subscriber, "HANDLER_GRACE", 0.05)
    await purge_work_queues(amqp_url)
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    earlier = RETURNS_LIMIT - RENEW_AFTER_RETURNS  # its earlier copies' returns
    message = encode(request, persistent=True)
    message.headers = {**message.headers, topology.RETURNED_HEADER: earlier}
    async with channel_of_its_own(amqp_url) as channel:
        await _returned_by_hand(channel, message)
    handled: list[ReservationRequested] = []

    async def handle(payload: ReservationRequested) -> None:
        handled.append(payload)

    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel, declared = await open_channel(connection, prefetch=10)
        broker = Broker(channel, declared, Publisher.on(channel, declared))
        await broker.subscribe(topology.CREDIT_CHECK, ReservationRequested, handle)
        async with channel_of_its_own(amqp_url) as asking:
            dead = await _declared(asking, topology.DEAD_LETTERS)
            letter = await get_within(dead, 10)
            await letter.ack()
    finally:
        await connection.close()
    assert handled == []
    reason = str(letter.headers[topology.DEAD_LETTER_REASON])
    assert reason.startswith(f"returned to its queue unsettled {RETURNS_LIMIT} times"), reason
    await purge_work_queues(amqp_url)


async def test_a_copy_that_cannot_be_published_afresh_is_handled_as_it_is(
    amqp_url: str, broker: infra.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full queue (``max-length``, ``reject-publish``) refuses the fresh copy. Given back at
    once, the delivery came straight back, was refused again, and the broker dead-lettered it
    within milliseconds (a review). It is handled as it is instead."""
    logs = capture_logs_of(monkeypatch, delivery)
    await purge_work_queues(amqp_url)
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b")
    async with channel_of_its_own(amqp_url) as channel:
        await _returned_by_hand(channel, encode(request, persistent=True))
        # Behind it (a returned message keeps its place): one more, so that the queue is over
        # its limit while the worker holds the first (a quorum queue counts the ready ones).
        behind = ReservationRequested(reservation_id=uuid.uuid4(), username="bob", item_id="b")
        await channel.default_exchange.publish(
            encode(behind, persistent=True), topology.CREDIT_CHECK.name
        )
    full = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    pattern = f"^{topology.CREDIT_CHECK.name}$"
    broker.rabbitmqctl(
        "set_policy", "-p", broker.vhost, "--apply-to", "queues", "refusing", pattern, full
    )
    handled: list[ReservationRequested] = []

    async def handle(payload: ReservationRequested) -> None:
        handled.append(payload)

    connection = await aio_pika.connect_robust(amqp_url)
    try:
        await _until_refused(amqp_url)
        channel, declared = await open_channel(connection, prefetch=1)  # one at a time
        broker_ = Broker(channel, declared, Publisher.on(channel, declared))
        await broker_.subscribe(topology.CREDIT_CHECK, ReservationRequested, handle)
        async for attempt in eventually_async(10, every=0.05):
            with attempt:
                assert request in handled and behind in handled
    finally:
        broker.rabbitmqctl("clear_policy", "-p", broker.vhost, "refusing")
        await connection.close()
    assert [p for p in handled if p == request] == [request]
    assert any("as it is" in e["event"] for e in logs.entries), logs.entries
    async with channel_of_its_own(amqp_url) as channel:
        dead = await _declared(channel, topology.DEAD_LETTERS)
        while letter := await dead.get(fail=False):
            assert letter.message_id != request.message_id, letter.headers
            await letter.ack()
    await purge_work_queues(amqp_url)


async def _returned_by_hand(channel: AbstractChannel, message: aio_pika.Message) -> None:
    """Publish ``message`` to ``credit-check`` and give it back unsettled until the next
    delivery is the one a worker publishes afresh."""
    await channel.default_exchange.publish(message, topology.CREDIT_CHECK.name)
    queue = await _declared(channel, topology.CREDIT_CHECK)
    for _ in range(RENEW_AFTER_RETURNS):
        delivered = await get_within(queue, 5)
        await delivered.reject(requeue=True)


async def _declared(channel: AbstractChannel, spec: topology.QueueSpec) -> AbstractQueue:
    return await channel.declare_queue(spec.name, durable=True, arguments=dict(spec.arguments))


async def _until_refused(amqp_url: str) -> None:
    """Until the queue's new limit is in force: a publish to it is refused (a nack)."""
    async with channel_of_its_own(amqp_url) as channel:
        async for attempt in eventually_async(10, every=0.1):
            with attempt:
                probe = ReservationRequested(reservation_id=uuid.uuid4(), username="p", item_id="p")
                try:
                    await channel.default_exchange.publish(
                        encode(probe, persistent=True), topology.CREDIT_CHECK.name
                    )
                except DeliveryError:
                    return
                raise AssertionError("the limit is not in force yet: the probe was queued")
