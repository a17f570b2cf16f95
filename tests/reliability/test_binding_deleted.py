"""A route's binding deleted while the services run.

Nothing bound a queue again while the services ran: with ``credit-check``'s binding deleted,
every request came back unroutable and the API answered 503 until a restart; with
``fulfilment``'s, every confirmed reservation's event did, and after three failed attempts
the worker parked the request, already charged, in the dead-letter queue. A publish returned
unroutable now binds its route's queues again (``messaging/topology.py``, ``bind_route``) and
goes once more. A queue that is gone is not re-created: its consumer's worker does that, and
one deleted on purpose stays deleted. In vhosts of their own: the topology these tests break
is no other test's.
"""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import PublishError

from devtools.vhosts import private_vhost
from messaging import delivery, lasting, returns, rpc, topology
from messaging.connection import open_channel
from messaging.envelope import encode
from messaging.messages import CreditChecked, ReservationRequested
from messaging.publisher import Publisher
from messaging.rpc import BrokerUnavailable, RpcClient
from messaging.topology import ExchangeSpec, Route
from store.settings import StoreSettings
from tests import infra
from tests.logs import capture_logs_of
from tests.system import (
    configure_env,
    consumers_and_messages,
    get_within,
    publishing_in_own_vhost,
    until_consuming,
    vhost_tool,
)
from tests.waiting import eventually_async
from workers.credit_check.__main__ import WORKER
from workers.runtime import serve

BINDING_AGAIN = "a publish came back unroutable; binding its queues again"


def _request() -> ReservationRequested:
    return ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="book-1")


async def _unbind(connection: AbstractRobustConnection, spec: topology.QueueSpec) -> None:
    operator = await connection.channel()
    queue = await operator.get_queue(spec.name, ensure=False)
    await queue.unbind(spec.exchange.name, spec.routing_keys[0])
    await operator.close()


async def test_requests_whose_binding_was_deleted_are_routed_once_it_is_bound_again(
    amqp_url: str, broker: infra.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = capture_logs_of(monkeypatch, returns)
    async with publishing_in_own_vhost(amqp_url, broker, "binding-deleted") as (
        connection,
        requests,
    ):
        await _unbind(connection, topology.CREDIT_CHECK)
        sent = [_request() for _ in range(20)]
        await asyncio.gather(*(requests.publish(r, topology.RESERVATION_REQUESTS) for r in sent))
        channel = await connection.channel()
        assert await consumers_and_messages(channel, topology.CREDIT_CHECK) == (0, 20)
        # The binding is back for every publisher, not only for these copies.
        plain = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await plain.get_exchange(topology.RESERVATIONS.name, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{}"), topology.RESERVATION_REQUESTED, mandatory=True
        )
    # The twenty returns waited for one binding.
    assert [e["event"] for e in logs.entries].count(BINDING_AGAIN) == 1, logs.entries


async def test_a_route_that_no_queue_is_bound_by_stays_unroutable_at_once(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binding again cannot route a key the topology binds no queue by: the return stands
    (a 503 for the API), and nothing is bound for it."""
    logs = capture_logs_of(monkeypatch, returns)
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        requests = Publisher.on(*await open_channel(connection))
        nowhere = Route(ExchangeSpec(topology.RESERVATIONS.name), "no.binding")
        with pytest.raises(PublishError):
            await requests.publish(_request(), nowhere)
    finally:
        await connection.close()
    assert logs.entries == []


async def test_a_queue_that_is_gone_is_not_re_created(
    amqp_url: str, broker: infra.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted on purpose, or by an ``expires`` policy while no worker consumes it: a queue
    re-created by the API would take requests nobody reads, and could expire again with them.
    The return stands (a 503: nothing queued, safe to retry), and the warning names it."""
    logs = capture_logs_of(monkeypatch, returns)
    async with publishing_in_own_vhost(amqp_url, broker, "queue-deleted") as (
        connection,
        requests,
    ):
        await (await connection.channel()).queue_delete(topology.CREDIT_CHECK.name)
        with pytest.raises(PublishError):
            await requests.publish(_request(), topology.RESERVATION_REQUESTS)
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            checking = await connection.channel()
            await checking.declare_queue(topology.CREDIT_CHECK.name, passive=True)
    gone = [e for e in logs.entries if e["event"].startswith("not re-creating a queue")]
    assert [e["queues"] for e in gone] == [[topology.CREDIT_CHECK.name]], logs.entries


async def test_a_return_not_bound_again_by_the_deadline_is_a_503_not_a_202(
    amqp_url: str, broker: infra.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker returned the request: nothing is queued, whatever the binding does after the
    call's deadline. Answering 202 there would tell the client it was queued, and set the
    republisher publishing an unroutable request until the process stops."""
    monkeypatch.setattr(rpc, "PUBLISH_TIMEOUT", 0.5)

    async def binding_that_hangs(*_: object) -> tuple[str, ...]:
        await asyncio.sleep(30)
        return ()

    monkeypatch.setattr(topology, "bind_route", binding_that_hangs)
    with private_vhost(amqp_url, vhost_tool(broker), "binding-hangs") as own_vhost:
        connection = await aio_pika.connect_robust(own_vhost)
        try:
            channel, declared = await open_channel(connection)
            client = RpcClient(channel, Publisher.on(channel, declared), reply_timeout=1)
            await client.start()
            await _unbind(connection, topology.CREDIT_CHECK)
            with pytest.raises(BrokerUnavailable, match="NO_ROUTE"):
                await asyncio.wait_for(
                    client.call(_request(), CreditChecked, to=topology.RESERVATION_REQUESTS), 5
                )
            assert client.republisher.in_progress == 0
            await client.close()
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def _worker_in_own_vhost(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> AsyncIterator[tuple[AbstractRobustConnection, AbstractChannel]]:
    """A credit-check worker consuming in a vhost of its own; a connection there, and a
    confirming channel on it with the topology declared, once the worker consumes."""
    with private_vhost(amqp_url, vhost_tool(broker), name) as own_vhost:
        configure_env(monkeypatch, own_vhost, store_settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(serve(WORKER, stop))
        connection = await aio_pika.connect_robust(own_vhost)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await topology.declare(channel)
            await until_consuming(channel, topology.CREDIT_CHECK)
            yield connection, channel
        finally:
            await connection.close()
            stop.set()
            await asyncio.wait_for(worker, 15)


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_an_event_whose_binding_was_deleted_costs_no_attempt(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = capture_logs_of(monkeypatch, delivery)
    own = _worker_in_own_vhost(amqp_url, broker, store_settings, monkeypatch, "event-binding")
    async with own as (connection, channel):
        declared = await topology.declare(channel)
        await _unbind(connection, topology.FULFILMENT)
        request = _request()
        await channel.default_exchange.publish(
            encode(request, persistent=True), topology.CREDIT_CHECK.name
        )
        event = await get_within(declared.queues[topology.FULFILMENT.name], 10)
        assert str(request.reservation_id) in event.body.decode()
        assert (await consumers_and_messages(channel, topology.DEAD_LETTERS))[1] == 0
    assert [e for e in failures.entries if e["event"].startswith("handler failed")] == []


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_binding_deleted_while_another_queue_takes_the_key_is_bound_again_by_its_worker(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an audit queue bound by ``#``, a request whose work queue lost its binding is
    routed there and confirmed: no return, so no publisher binds again, and the worker's
    queue got nothing until its quiet spell's renewal, 30 s on (a review's 98 of 200
    requests answered 202 and never decided). The worker binds its queue again in its first
    quiet check (each ``CHECK_EVERY``; half a second here). What was published in between
    went to the audit queue alone: the window is shorter, not gone."""
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.5)
    own = _worker_in_own_vhost(amqp_url, broker, store_settings, monkeypatch, "shadowed")
    async with own as (connection, channel):
        declared = await topology.declare(channel)
        audit = await channel.declare_queue("audit", durable=True)
        await audit.bind(topology.RESERVATIONS.name, "#")
        await _unbind(connection, topology.CREDIT_CHECK)
        exchange = declared.exchanges[topology.RESERVATIONS.name]
        requests = topology.RESERVATION_REQUESTED
        shadowed = _request()
        await exchange.publish(encode(shadowed, persistent=True), requests, mandatory=True)
        events = declared.queues[topology.FULFILMENT.name]
        sent: list[str] = []
        async for attempt in eventually_async(10, every=0.2):
            with attempt:
                request = _request()
                sent.append(str(request.reservation_id))
                await exchange.publish(encode(request, persistent=True), requests)
                event = await get_within(events, 1)
                await event.ack()
        assert json.loads(event.body)["reservation_id"] in sent
        assert str(shadowed.reservation_id) not in event.body.decode()
        assert (await consumers_and_messages(channel, topology.DEAD_LETTERS))[1] == 0
