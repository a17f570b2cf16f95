"""A route's queue or binding deleted while the services run.

Nothing declared a binding again while the services ran: with ``credit-check``'s binding
deleted, every request came back unroutable and the API answered 503 until a restart; with
``fulfilment``'s, every confirmed reservation's event did, and after three failed attempts
the worker parked the request, already charged, in the dead-letter queue. A publish returned
unroutable now declares its route's queues and bindings again (``messaging/topology.py``),
and goes once more. In a vhost of its own: the topology it breaks is no other test's.
"""

import asyncio
import uuid

import aio_pika
import pytest
from aio_pika.exceptions import PublishError

from devtools.vhosts import private_vhost
from messaging import delivery, topology
from messaging.connection import open_channel
from messaging.envelope import encode
from messaging.messages import ReservationRequested
from messaging.publisher import Publisher
from messaging.topology import ExchangeSpec, Route
from store.settings import StoreSettings
from tests import infra
from tests.logs import capture_logs_of
from tests.system import configure_env, consumers_and_messages, get_within, until_consuming
from workers.credit_check.__main__ import WORKER
from workers.runtime import serve


def _request() -> ReservationRequested:
    return ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="book-1")


async def test_a_request_whose_binding_was_deleted_is_routed_once_it_is_declared_again(
    amqp_url: str, broker: infra.Broker
) -> None:
    if broker.ctl is None:
        pytest.skip("a vhost of its own needs rabbitmqctl")
    with private_vhost(amqp_url, broker.ctl, "binding-deleted") as own_vhost:
        connection = await aio_pika.connect_robust(own_vhost)
        try:
            publisher = Publisher.on(*await open_channel(connection))
            operator = await connection.channel()
            queue = await operator.get_queue(topology.CREDIT_CHECK.name, ensure=False)
            await queue.unbind(topology.RESERVATIONS.name, topology.RESERVATION_REQUESTED)
            request = _request()
            await publisher.publish(request, topology.RESERVATION_REQUESTS)  # not returned
            queued = await get_within(queue, 5)
            assert str(request.reservation_id) in queued.body.decode()
            # The binding is back for every publisher, not only for this one copy.
            plain = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await plain.get_exchange(topology.RESERVATIONS.name, ensure=False)
            await exchange.publish(
                aio_pika.Message(b"{}"), topology.RESERVATION_REQUESTED, mandatory=True
            )
        finally:
            await connection.close()


async def test_a_route_that_no_queue_is_bound_by_is_still_unroutable(amqp_url: str) -> None:
    """Declaring again cannot route a key the topology binds no queue by: still an error
    (a 503 for the API), after the one declaration."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        publisher = Publisher.on(*await open_channel(connection))
        nowhere = Route(ExchangeSpec(topology.RESERVATIONS.name), "no.binding")
        with pytest.raises(PublishError):
            await publisher.publish(_request(), nowhere)
    finally:
        await connection.close()


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_an_event_whose_binding_was_deleted_costs_no_attempt(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if broker.ctl is None:
        pytest.skip("a vhost of its own needs rabbitmqctl")
    failures = capture_logs_of(monkeypatch, delivery)
    with private_vhost(amqp_url, broker.ctl, "event-binding-deleted") as own_vhost:
        configure_env(monkeypatch, own_vhost, store_settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(serve(WORKER, stop))
        connection = await aio_pika.connect(own_vhost)
        try:
            channel = await connection.channel(publisher_confirms=True)
            declared = await topology.declare(channel)
            await until_consuming(channel, topology.CREDIT_CHECK)
            fulfilment = declared.queues[topology.FULFILMENT.name]
            await fulfilment.unbind(topology.RESERVATIONS.name, topology.RESERVATION_CONFIRMED)
            request = _request()
            await channel.default_exchange.publish(
                encode(request, persistent=True), topology.CREDIT_CHECK.name
            )
            event = await get_within(fulfilment, 10)
            assert str(request.reservation_id) in event.body.decode()
            assert (await consumers_and_messages(channel, topology.DEAD_LETTERS))[1] == 0
        finally:
            await connection.close()
            stop.set()
            await asyncio.wait_for(worker, 15)
    assert [e for e in failures.entries if e["event"].startswith("handler failed")] == []
