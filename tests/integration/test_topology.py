"""The topology module against the real broker."""

import aio_pika
import pytest
from aio_pika.exceptions import PublishError

from messaging import topology

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
