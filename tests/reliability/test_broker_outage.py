"""Broker connection loss: the API and the workers recover by themselves.

The test closes every connection of this session's virtual host from the broker side and, for
the length of the outage, makes the vhost refuse new connections (``max-connections`` = 0):
to the clients that is a broker that went away. Other vhosts on the broker are untouched.
"""

import asyncio
import json
import time
from collections.abc import Callable

import httpx

from messaging import topology
from tests.hop import Hop
from tests.infra import Broker
from tests.stack import System
from tests.waiting import eventually, eventually_async


def _consumers(broker: Broker, queue: str) -> int:
    """Consumers the broker has registered on ``queue`` (list_queues' count lags for quorum
    queues on RabbitMQ 3.x; list_consumers lists each one)."""
    out = broker.rabbitmqctl("list_consumers", "-q", "-p", broker.vhost, "queue_name")
    return [line.strip() for line in out.splitlines()].count(queue)


def _post(system: System) -> httpx.Response:
    return httpx.post(
        f"{system.api_url}/reservations",
        json={"username": "alice", "item_id": "book-1"},
        timeout=10,
    )


def test_api_and_worker_recover_from_a_broker_outage(system: System, broker: Broker) -> None:
    assert _post(system).status_code == 201
    assert _consumers(broker, topology.CREDIT_CHECK.name) == 1

    broker.rabbitmqctl("set_vhost_limits", "-p", broker.vhost, json.dumps({"max-connections": 0}))
    try:
        broker.rabbitmqctl("close_all_connections", "-p", broker.vhost, "outage test")
        for attempt in eventually(10, every=0.2):
            with attempt:
                assert httpx.get(f"{system.api_url}/readyz", timeout=5).status_code == 503
        during = [_post(system) for _ in range(5)]
        assert {r.status_code for r in during} == {503}, [r.text for r in during]
        assert "broker is unavailable" in during[0].json()["detail"]
        api = system.running[-1]  # the fixture starts the workers, then the API
        logged = [line for line in api.log().splitlines() if "broker unavailable" in line]
        assert len(logged) == len(during), api.log()
        assert all("the broker channel is not open" in line for line in logged), logged
    finally:
        broker.rabbitmqctl("clear_vhost_limits", "-p", broker.vhost)
    back = time.monotonic()

    # Within 5 s of the broker accepting connections again, reservations succeed...
    for attempt in eventually(5, every=0.2):
        with attempt:
            assert _post(system).status_code == 201
    recovered_after = time.monotonic() - back
    assert httpx.get(f"{system.api_url}/readyz", timeout=5).status_code == 200
    # ...and each worker's queue has its consumer again (aio-pika restored it).
    for attempt in eventually(10, every=0.5):
        with attempt:
            assert _consumers(broker, topology.CREDIT_CHECK.name) == 1
            assert _consumers(broker, topology.FULFILMENT.name) == 1
    print(f"\nrecovered {recovered_after:.1f}s after the broker came back")  # noqa: T201
    for process in system.running:
        assert process.popen.poll() is None, process.log()
        assert "Task exception was never retrieved" not in process.log()


async def test_readyz_says_not_ready_while_the_broker_confirms_nothing(
    make_system: Callable[[], System], api_port: int, broker_behind_a_hop: tuple[Hop, str]
) -> None:
    """A broker that blocks publishers (a memory or disk alarm) keeps the connection open and
    confirms nothing; frozen here, which the API cannot tell apart. `/readyz` read only the
    connection's state and said ready while every POST answered 202 after 5 s; now it says
    not ready while a request waits for a confirm, and ready again once one came."""
    system = make_system()
    hop, through_hop = broker_behind_a_hop
    await asyncio.to_thread(system.start_api, api_port, AMQP_URL=through_hop)
    await asyncio.to_thread(system.start_worker, "workers.credit_check")
    async with httpx.AsyncClient(base_url=system.api_url, timeout=15) as client:
        body = {"username": "alice", "item_id": "book-1"}
        assert (await client.post("/reservations", json=body)).status_code == 201
        assert (await client.get("/readyz")).json() == {"status": "ready", "broker": "up"}

        hop.freeze()
        try:
            pending = await client.post("/reservations", json=body)
            assert pending.status_code == 202, pending.text
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json() == {
                "status": "not ready",
                "broker": "not confirming",
                "unconfirmed": 1,
            }
        finally:
            hop.thaw()

        async for attempt in eventually_async(15, every=0.2):
            with attempt:
                assert (await client.get("/readyz")).status_code == 200
        location = pending.headers["location"]
        async for attempt in eventually_async(15, every=0.2):
            with attempt:
                assert (await client.get(location)).json()["status"] == "confirmed"
