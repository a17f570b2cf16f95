"""A work queue deleted and declared again with other arguments while a worker consumes it.

RabbitMQ cancels the consumer; aio-pika cannot restore it (each try is a PRECONDITION_FAILED
that it logs at DEBUG) and would try for ever. The worker gives it up after
``lasting.LOST_AFTER`` seconds and exits, saying so, instead of idling unnoticed.
"""

import asyncio

import aio_pika
import pytest

from messaging import lasting, topology
from messaging.subscriber import ConsumerLost
from store.settings import StoreSettings
from tests.system import configure_env, start_worker
from tests.waiting import eventually_async

QUEUE = topology.CREDIT_CHECK


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_worker_whose_queue_is_replaced_exits_saying_so(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lasting, "LOST_AFTER", 1.0)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.2)
    monkeypatch.setattr(lasting, "RESTORE_EVERY", 0.2)
    configure_env(monkeypatch, amqp_url, store_settings)
    worker = start_worker()
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        async for attempt in eventually_async(15, every=0.1):
            with attempt:
                declared = await channel.declare_queue(
                    QUEUE.name, durable=True, arguments=dict(QUEUE.arguments)
                )
                assert declared.declaration_result.consumer_count == 1
        await channel.queue_delete(QUEUE.name)
        await channel.declare_queue(QUEUE.name, durable=True)  # classic, without our arguments
        try:
            with pytest.raises(ConsumerLost, match=f"not consuming from queue '{QUEUE.name}'"):
                await asyncio.wait_for(worker.task, 15)
        finally:
            await channel.queue_delete(QUEUE.name)  # the next test declares the real one again
