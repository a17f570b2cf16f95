"""Broker connection loss: the API and the workers recover by themselves.

The test closes every connection of this session's virtual host from the broker side and, for
the length of the outage, makes the vhost refuse new connections (``max-connections`` = 0):
to the clients that is a broker that went away. Other vhosts on the broker are untouched.
"""

import json
import time

import httpx

from messaging import topology
from tests.infra import Broker
from tests.stack import System
from tests.waiting import eventually


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
