"""A worker whose publishing channel is closed for good while its connection stays up.

A worker publishes on a channel of its own (:meth:`messaging.broker.Broker.open`). aio-pika
restores it after a channel error, but a robust channel closed in the middle of its restore
stays closed (a fault campaign saw it): the worker went on consuming, and held each delivery
in turn while it waited for a channel that never came back. It now gives the channel up after
``lasting.LOST_AFTER`` seconds and exits, saying so; what it held goes back to the queue,
and the next worker finishes it, charging nothing twice.
"""

import asyncio
import uuid
from collections.abc import Callable

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused
from yarl import URL

from devtools.vhosts import private_vhost
from messaging import delivery, lasting, topology
from messaging.connection import open_channel
from messaging.envelope import encode
from messaging.handlers import Handled, Publication
from messaging.messages import ReservationConfirmed, ReservationRequested
from messaging.publisher import Publisher, PublishingLost
from store.settings import StoreSettings
from tests import infra
from tests.logs import capture_logs_of
from tests.stack import System
from tests.system import (
    RecordingPublishers,
    configure_env,
    consumers_and_messages,
    credits_of,
    publishing_with_empty_dead_letters,
    purge_work_queues,
    start_worker,
    until_consuming,
    vhost_tool,
)
from tests.waiting import eventually_async
from workers.credit_check.__main__ import WORKER
from workers.runtime import serve

PRICE, CREDITS = 10, 100  # book-1 and alice in store/seed.json


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_worker_whose_publishing_channel_stays_closed_exits_and_loses_nothing(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lasting, "LOST_AFTER", 1.0)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 0.2)
    monkeypatch.setattr(lasting, "RESTORE_EVERY", 0.2)
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    recording = RecordingPublishers()
    worker = asyncio.create_task(serve(WORKER, asyncio.Event(), publisher=recording))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="book-1")
    async with publishing_with_empty_dead_letters(amqp_url) as declared:
        channel = declared.queues[topology.CREDIT_CHECK.name].channel
        await until_consuming(channel, topology.CREDIT_CHECK)
        # Closed by hand: aio-pika does not reopen it, as after a restore that failed.
        [lost_channel] = recording.channels
        await lost_channel.close()
        requests = declared.exchanges[topology.RESERVATION_REQUESTS.exchange.name]
        await requests.publish(
            encode(request, persistent=True), topology.RESERVATION_REQUESTS.routing_key
        )
        with pytest.raises(PublishingLost, match="publishing channel has been closed"):
            await asyncio.wait_for(worker, 15)
        # Charged once, its event not published: the delivery went back to the queue.
        assert await credits_of(store_settings) == CREDITS - PRICE
        async for attempt in eventually_async(10, every=0.1):
            with attempt:
                assert await consumers_and_messages(channel, topology.CREDIT_CHECK) == (0, 1)
        assert (await consumers_and_messages(channel, topology.DEAD_LETTERS))[1] == 0

        # The next worker takes it up: the event goes out, and nothing is charged again.
        fulfilment = declared.queues[topology.FULFILMENT.name]
        next_worker = start_worker()
        try:
            async for attempt in eventually_async(15, every=0.1):
                with attempt:
                    assert await consumers_and_messages(channel, topology.FULFILMENT) == (0, 1)
        finally:
            await next_worker.close()
        event = await fulfilment.get(timeout=5)
        assert str(request.reservation_id) in event.body.decode()
        await event.ack()
    assert await credits_of(store_settings) == CREDITS - PRICE


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_an_event_whose_channel_closes_under_it_is_held_and_costs_no_attempt(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker closes a channel that publishes to an exchange an operator deleted (404);
    aio-pika reopens it and declares the exchange and its bindings again. The event that met
    the 404 was a handler failure: an attempt spent on a reservation already charged, and an
    exchange deleted 30 times under load dead-lettered six (a fault campaign). Now it is held
    and published once the channel is back."""
    configure_env(monkeypatch, amqp_url, store_settings)
    await purge_work_queues(amqp_url)
    failures = capture_logs_of(monkeypatch, delivery)
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(WORKER, stop))
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="book-1")
    try:
        async with publishing_with_empty_dead_letters(amqp_url) as declared:
            channel = declared.queues[topology.CREDIT_CHECK.name].channel
            await until_consuming(channel, topology.CREDIT_CHECK)
            await channel.exchange_delete(topology.RESERVATIONS.name)
            # Straight to the queue: the exchange requests go through is the one deleted.
            await channel.default_exchange.publish(
                encode(request, persistent=True), topology.CREDIT_CHECK.name
            )
            fulfilment = declared.queues[topology.FULFILMENT.name]
            async for attempt in eventually_async(15, every=0.1):
                with attempt:
                    assert await consumers_and_messages(channel, topology.FULFILMENT) == (0, 1)
            event = await fulfilment.get(timeout=5)
            assert str(request.reservation_id) in event.body.decode()
            await event.ack()
            assert (await consumers_and_messages(channel, topology.DEAD_LETTERS))[1] == 0
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)
    assert [e for e in failures.entries if e["event"].startswith("handler failed")] == []
    assert await credits_of(store_settings) == CREDITS - PRICE


async def _with_a_conflicting_dead_letter_queue(amqp_url: str) -> None:
    """The dead-letter queue declared again, classic: a channel that declares the topology
    again (aio-pika's restore, after a channel error) is refused (406) and stays closed."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(topology.DEAD_LETTERS.name)
        await channel.declare_queue(topology.DEAD_LETTERS.name, durable=True)
        await channel.exchange_delete(topology.RESERVATIONS.name)  # the channel error
    finally:
        await connection.close()


async def _topology_put_back(amqp_url: str) -> None:
    """The dead-letter queue as the topology declares it again (quorum), and the exchange."""
    connection = await aio_pika.connect(amqp_url)
    try:
        await (await connection.channel()).queue_delete(topology.DEAD_LETTERS.name)
        await topology.declare(await connection.channel())
    finally:
        await connection.close()


async def test_an_api_whose_channel_cannot_be_restored_says_not_ready_then_exits_1(
    make_system: Callable[[], System], api_port: int, amqp_url: str, broker: infra.Broker
) -> None:
    """A fault campaign: the API's channel met a deleted exchange, and its restore was refused
    (a queue declared again with other arguments). The connection stayed up, the channel
    closed: every POST answered 503 until a restart, while /readyz said ready. Now /readyz
    says why it is not, and after 30 s the API stops, saying so, and exits 1. In a vhost of
    its own: the topology it breaks is no other test's, whatever happens to this one."""
    system = make_system()
    with private_vhost(amqp_url, vhost_tool(broker), "api-lost") as own_vhost:
        api = await asyncio.to_thread(system.start_api, api_port, AMQP_URL=own_vhost)
        await _with_a_conflicting_dead_letter_queue(own_vhost)
        async with httpx.AsyncClient(base_url=system.api_url, timeout=15) as client:
            body = {"username": "alice", "item_id": "book-1"}
            refused = await client.post("/reservations", json=body)  # meets the 404
            assert refused.status_code in (202, 503), refused.text
            async for attempt in eventually_async(10, every=0.2):
                with attempt:
                    ready = await client.get("/readyz")
                    assert ready.json() == {"status": "not ready", "broker": "channel closed"}
            assert (await client.post("/reservations", json=body)).status_code == 503
            # Its restore is tried (and refused) every second: the channel is open for the
            # moment each try's declarations take, and /readyz must go on naming the channel,
            # not judge it as an open one (it said "not confirming" then, for the 202 above;
            # "ready" without one).
            answers = await _readyz_for(client, seconds=3.5)
            assert answers == {"channel closed"}, answers
        assert await asyncio.to_thread(api.wait_exit, lasting.LOST_AFTER + 20) == 1
        system.running.remove(api)
        assert "the publishing channel has been closed for 30 s" in api.log(), api.log()
        # Tried again every RESTORE_EVERY (1 s), said at most every CHECK_EVERY (5 s).
        said = api.log().count("the publishing channel could not be restored")
        assert 1 <= said <= lasting.LOST_AFTER / lasting.CHECK_EVERY + 2, api.log()


async def _readyz_for(client: httpx.AsyncClient, *, seconds: float) -> set[str]:
    """What /readyz said about the broker, asked back to back for ``seconds`` (at most 5,000
    times)."""
    said: set[str] = set()
    until = asyncio.get_running_loop().time() + seconds
    for _ in range(5_000):
        if asyncio.get_running_loop().time() >= until:
            break
        said.add((await client.get("/readyz")).json()["broker"])
    return said


async def test_ready_ends_at_once_when_the_worker_stops(amqp_url: str) -> None:
    """A retry copy or a dead letter waits (10 s at most) for the publishing channel to be back;
    a worker stopping meanwhile gives the delivery back at once instead."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        publisher = Publisher({}, channel.default_exchange, channel=channel)
        await channel.close()  # closed by hand: aio-pika does not reopen it
        waiting = asyncio.ensure_future(publisher.ready(10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        publisher.release()
        assert await asyncio.wait_for(waiting, 1) is False
    finally:
        await connection.close()


async def test_an_event_refused_for_want_of_permission_is_not_held(
    amqp_url: str, broker: infra.Broker
) -> None:
    """A channel error a reopened channel would meet again (403: the user may not write to
    the exchange) fails the handler at once, rather than reopen the worker's publishing
    channel again and again for the whole hold, cutting the other publishes in flight."""
    user, password = f"no-write-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    broker.rabbitmqctl("add_user", user, password)
    try:
        writable = f"^(?!{topology.RESERVATIONS.name}$).*"
        broker.rabbitmqctl("set_permissions", "-p", broker.vhost, user, ".*", writable, ".*")
        url = URL(amqp_url).with_user(user).with_password(password)
        connection = await aio_pika.connect_robust(str(url))
        try:
            publisher = Publisher.on(*await open_channel(connection))
            confirmed = ReservationConfirmed(
                reservation_id=uuid.uuid4(), username="alice", item_id="book-1", price=10
            )
            handled = Handled(events=(Publication(confirmed, topology.RESERVATION_CONFIRMATIONS),))
            started = asyncio.get_running_loop().time()
            with pytest.raises(ChannelAccessRefused):
                await publisher.send(handled, None)
            assert asyncio.get_running_loop().time() - started < publisher.hold / 2
        finally:
            await connection.close()
    finally:
        broker.rabbitmqctl("delete_user", user)


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_publishing_channel_whose_restore_failed_is_restored_again(
    amqp_url: str,
    broker: infra.Broker,
    store_settings: StoreSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aio-pika restores a channel once. A fault campaign's exchange deletions raced the
    restore of the worker's publishing channel, which then stayed closed: the worker exited
    30 s later, and the credit-check stage stopped until someone restarted it. The watchdog
    now tries the restore again every RESTORE_EVERY seconds (not at the pace of the checks
    that ask the broker, CHECK_EVERY: a restore once every 5 s left the API answering 503 for
    up to 5 s after the cause was gone); once it goes through, the held event goes out, and
    the worker stays. Here the restore fails on a conflicting queue, for a while."""
    monkeypatch.setattr(lasting, "LOST_AFTER", 3.0)
    monkeypatch.setattr(lasting, "CHECK_EVERY", 60.0)  # the restore must not wait for these
    monkeypatch.setattr(lasting, "RESTORE_EVERY", 0.2)
    with private_vhost(amqp_url, vhost_tool(broker), "restore-again") as own_vhost:
        configure_env(monkeypatch, own_vhost, store_settings)
        recording, stop = RecordingPublishers(), asyncio.Event()
        worker = asyncio.create_task(serve(WORKER, stop, publisher=recording))
        request = ReservationRequested(
            reservation_id=uuid.uuid4(), username="alice", item_id="book-1"
        )
        try:
            async with publishing_with_empty_dead_letters(own_vhost) as declared:
                channel = declared.queues[topology.CREDIT_CHECK.name].channel
                await until_consuming(channel, topology.CREDIT_CHECK)
                await _with_a_conflicting_dead_letter_queue(own_vhost)
                await channel.default_exchange.publish(
                    encode(request, persistent=True), topology.CREDIT_CHECK.name
                )
                [publishing_channel] = recording.channels
                async for attempt in eventually_async(10, every=0.05):
                    with attempt:  # its event met the 404; the restore met the 406
                        assert publishing_channel.is_closed
                await asyncio.sleep(1.0)
                await _topology_put_back(own_vhost)
                async for attempt in eventually_async(10, every=0.1):
                    with attempt:
                        assert await consumers_and_messages(channel, topology.FULFILMENT) == (
                            0,
                            1,
                        )
                assert not publishing_channel.is_closed
                await asyncio.sleep(lasting.LOST_AFTER + 1)
                assert not worker.done(), "the worker gave its channel up"
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)
