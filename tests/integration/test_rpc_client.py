"""The request/reply client when its channel dies under a waiting call, and when publishing
fails for a reason that is not the connection."""

import asyncio
import uuid

import aio_pika
import pytest

from messaging import topology
from messaging.broker import Broker
from messaging.messages import CreditChecked, ReservationRequested
from messaging.rpc import PUBLISH_TIMEOUT, BrokerUnavailable, ReplyLost, ReplyTimeout
from tests.system import purge_work_queues
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration


async def test_a_closed_channel_ends_waiting_calls_at_once_as_reply_lost(amqp_url: str) -> None:
    """The request was published, so its outcome is unknown (202), not failed (503)."""
    await purge_work_queues(amqp_url)
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        broker = await Broker.open(connection)
        rpc = await broker.rpc(reply_timeout=60)
        request = ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")
        call = asyncio.create_task(
            rpc.call(request, CreditChecked, to=topology.RESERVATION_REQUESTS)
        )
        observer = await connection.channel()
        async for attempt in eventually_async(10):
            with attempt:  # published and confirmed: the request waits in its queue
                queue = await observer.declare_queue(
                    topology.CREDIT_CHECK.name,
                    durable=True,
                    arguments=dict(topology.CREDIT_CHECK.arguments),
                )
                assert queue.declaration_result.message_count == 1
        await broker.channel.close()
        async with asyncio.timeout(10):  # far less than the 60 s reply timeout
            with pytest.raises(ReplyLost):
                await call
        assert rpc.pending == 0
    finally:
        await connection.close()
        await purge_work_queues(amqp_url)


async def test_a_bug_while_publishing_is_raised_at_once_not_republished(amqp_url: str) -> None:
    """A failure that is not the connection's (here, a route to an exchange the topology does
    not declare) is a bug: raised to the caller (a 500), not an unknown outcome (a 202, and
    republishing until the process stops)."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        broker = await Broker.open(connection)
        rpc = await broker.rpc(reply_timeout=60)
        request = ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")
        nowhere = topology.Route(topology.ExchangeSpec("not-in-the-topology"), "x")
        async with asyncio.timeout(1):  # far less than PUBLISH_TIMEOUT
            with pytest.raises(KeyError):
                await rpc.call(request, CreditChecked, to=nowhere)
        assert rpc.pending == 0
        assert rpc.republisher.in_progress == 0
    finally:
        await connection.close()


async def test_may_be_queued_is_told_as_a_copy_goes_out_and_when_none_is_queued(
    amqp_url: str,
) -> None:
    """What the API answers a reservation the shutdown cuts short rests on it: a request that
    may be queued is pending (202), one that never went out, or that the broker returned, is
    a 503 to retry."""
    await purge_work_queues(amqp_url)
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        broker = await Broker.open(connection)
        rpc = await broker.rpc(reply_timeout=0.5)
        told: list[tuple[str, bool]] = []
        request = ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")

        async def call(name: str, to: topology.Route = topology.RESERVATION_REQUESTS) -> None:
            await rpc.call(
                request, CreditChecked, to=to, may_be_queued=lambda q: told.append((name, q))
            )

        with pytest.raises(ReplyTimeout):  # no worker: queued, no reply
            await call("queued")
        assert told == [("queued", True)]

        unbound = topology.Route(topology.RESERVATIONS, "no.queue.bound")
        with pytest.raises(BrokerUnavailable):  # returned unroutable: nothing queued
            await call("returned", unbound)
        assert told[1:] == [("returned", True), ("returned", False)]

        await broker.channel.close()  # closed for good: no copy can go out
        async with asyncio.timeout(PUBLISH_TIMEOUT + 5):
            with pytest.raises(BrokerUnavailable):
                await call("closed")
        assert [name for name, _ in told].count("closed") == 0
    finally:
        await connection.close()
        await purge_work_queues(amqp_url)
