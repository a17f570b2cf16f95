"""The topology module against the real broker."""

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import PublishError

from devtools.vhosts import private_vhost
from messaging import topology
from tests.infra import Broker
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration


async def test_declare_is_idempotent_and_routes(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        first = await topology.declare(channel)
        second = await topology.declare(channel)  # no 406 PRECONDITION_FAILED
        assert set(first.queues) == set(second.queues) == {q.name for q in topology.QUEUES}
        dead_letters = second.queues[topology.DEAD_LETTERS.name]
        await dead_letters.purge()
        dlx = second.exchanges[topology.DEAD_LETTER_EXCHANGE.name]
        await dlx.publish(aio_pika.Message(b"{}"), routing_key="anything", mandatory=True)
        message = await dead_letters.get(timeout=5, fail=True)
        assert message is not None and message.body == b"{}"
        await message.ack()
    finally:
        await connection.close()


async def test_unroutable_publish_raises(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        declared = await topology.declare(channel)
        exchange = declared.exchanges[topology.RESERVATIONS.name]
        with pytest.raises(PublishError):
            await exchange.publish(
                aio_pika.Message(b"{}"), routing_key="no.binding", mandatory=True
            )
    finally:
        await connection.close()


async def test_a_message_returned_past_the_delivery_limit_is_dead_lettered_by_the_broker(
    broker: Broker,
) -> None:
    """The broker-side backstop (docs/guarantees.md): a work queue dead-letters a message
    that came back more than ``DELIVERY_LIMIT`` times, with the broker's own reason, whether
    or not a worker lived to count. ``basic.reject`` with requeue counts as a failed delivery
    on every RabbitMQ version (from 4.3 a ``basic.nack`` return does not)."""
    if broker.ctl is None:
        pytest.skip("rabbitmqctl cannot reach this broker: no private vhost")
    with private_vhost(broker.url, broker.ctl, "backstop") as url:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            declared = await topology.declare(channel)
            exchange = declared.exchanges[topology.RESERVATIONS.name]
            await exchange.publish(
                aio_pika.Message(b"{}", message_id="poison", headers={"kept": "yes"}),
                routing_key=topology.RESERVATION_REQUESTED,
                mandatory=True,
            )
            work = declared.queues[topology.CREDIT_CHECK.name]
            for _ in range(topology.DELIVERY_LIMIT + 1):
                delivery = await work.get(timeout=5, fail=True)
                assert delivery is not None and delivery.message_id == "poison"
                await delivery.reject(requeue=True)
            dead_letters = declared.queues[topology.DEAD_LETTERS.name]
            dead: AbstractIncomingMessage | None = None
            async for attempt in eventually_async(5, every=0.05):  # dead-lettering is async
                with attempt:
                    dead = await dead_letters.get(fail=False)
                    assert dead is not None
            assert dead is not None
            await dead.ack()
            assert dead.message_id == "poison" and dead.headers["kept"] == "yes"
            assert dead.headers["x-first-death-reason"] == "delivery_limit"
            assert dead.headers["x-first-death-queue"] == topology.CREDIT_CHECK.name
            assert await work.get(fail=False) is None
        finally:
            await connection.close()
