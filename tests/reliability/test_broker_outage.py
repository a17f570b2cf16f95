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
from messaging.publisher import PUBLISH_HOLD
from messaging.refusals import REPLACE_AFTER
from tests.hop import Hop
from tests.infra import Broker
from tests.stack import System
from tests.waiting import eventually, eventually_async

WORKER_SHUTDOWN_TIMEOUT = 10.0  # the default


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


def test_api_takes_reservations_again_once_an_operator_lifts_a_full_queues_limit(
    make_system: Callable[[], System], api_port: int, broker: Broker
) -> None:
    """A ``max-length`` with ``overflow: reject-publish`` on the credit-check queue, no worker:
    the queue fills and the API answers 503. The operator removes the limit while the queue is
    over it and starts a worker. RabbitMQ 3.10 never tells the API's channel it may publish
    again, so every reservation got 503 until the API was restarted (a fault campaign's
    finding); the API now replaces a channel refused for ``REPLACE_AFTER`` seconds."""
    system = make_system()
    system.seed({"limited": 100}, {"pen": 1})
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="1")
    api = system.running[-1]

    def post() -> int:
        body = {"username": "limited", "item_id": "pen"}
        return httpx.post(f"{system.api_url}/reservations", json=body, timeout=10).status_code

    _fill(broker, topology.CREDIT_CHECK.name)
    try:
        answers: list[int] = []
        for attempt in eventually(20, every=0.2):
            with attempt:
                answers.append(post())
                assert answers[-1] == 503
        assert set(answers) <= {202, 503}, answers  # queued (no worker), then refused
    finally:
        broker.rabbitmqctl("clear_policy", "-p", broker.vhost, "full")
    system.start_worker("workers.credit_check")

    lifted = time.monotonic()
    after: list[int] = []
    for attempt in eventually(REPLACE_AFTER + 15, every=0.5):
        with attempt:
            after.append(post())
            assert after[-1] == 201
    assert set(after) <= {201, 503}, after
    print(  # noqa: T201
        f"\nreservations taken again {time.monotonic() - lifted:.1f}s after the limit was "
        f"lifted ({after.count(503)} x 503 in between)"
    )
    if after.count(503) > 1:  # the broker went on refusing the channel: it was replaced
        assert "opening a new one" in api.log(), api.log()
    assert "Traceback" not in api.log(), api.log()


def _fill(broker: Broker, queue: str) -> None:
    """A limit of one message on ``queue``, refusing what is published past it (policy
    "full", lifted with ``clear_policy``)."""
    limit = json.dumps({"max-length": 1, "overflow": "reject-publish"})
    broker.rabbitmqctl(
        "set_policy", "-p", broker.vhost, "--apply-to", "queues", "full", f"^{queue}$", limit
    )


def _reserve(system: System) -> str:
    body = {"username": "limited", "item_id": "pen"}
    answer = httpx.post(f"{system.api_url}/reservations", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reservation_id"])


def _fulfilled(system: System, reservation_id: str) -> bool:
    url = f"{system.api_url}/reservations/{reservation_id}"
    return httpx.get(url, timeout=5).json()["download_url"] is not None


def test_worker_holds_refused_events_and_publishes_them_once_an_operator_lifts_the_limit(
    make_system: Callable[[], System], api_port: int, broker: Broker
) -> None:
    """The same on a worker's channel: the fulfilment queue full (no fulfilment worker), the
    credit-check worker's events refused, the limit removed while the queue is over it.

    A refused event failed its handler, whose three attempts went within a second: every
    reservation decided meanwhile was charged, answered 201 and dead-lettered, never fulfilled
    (a fault campaign: a third of them in a 60 s refusal). Now the event is held and published
    again. And on RabbitMQ 3.10 every event after the lift was refused on the worker's channel
    until the worker was restarted; the worker now replaces the channel. Every reservation,
    those decided during the refusal included, is fulfilled."""
    system = make_system()
    system.seed({"limited": 1_000}, {"pen": 1})
    system.start_api(api_port)
    checker = system.start_worker("workers.credit_check")

    _fill(broker, topology.FULFILMENT.name)
    during: list[str] = []
    try:
        for attempt in eventually(20, every=0.2):
            with attempt:
                during.append(_reserve(system))
                assert "holding a message the broker did not take" in checker.log()
        during += [
            _reserve(system) for _ in range(3)
        ]  # over the limit (a quorum queue's is approximate)
    finally:
        broker.rabbitmqctl("clear_policy", "-p", broker.vhost, "full")
    system.start_worker("workers.fulfilment")

    lifted = time.monotonic()
    for attempt in eventually(REPLACE_AFTER + 20, every=0.5):
        with attempt:
            reservation_id = _reserve(system)
            for settled in eventually(2, every=0.2):
                with settled:
                    assert _fulfilled(system, reservation_id)
    took = time.monotonic() - lifted
    for attempt in eventually(PUBLISH_HOLD, every=0.5):
        with attempt:
            assert [r for r in during if not _fulfilled(system, r)] == []
    print(  # noqa: T201
        f"\nevents taken again {took:.1f}s after the limit was lifted; the {len(during)} "
        "reservations decided during the refusal fulfilled"
    )
    assert "handler failed for the last time" not in checker.log(), checker.log()
    assert "Traceback" not in system.running[-1].log()


def test_sigterm_releases_the_events_a_worker_holds_for_the_next_worker(
    make_system: Callable[[], System], api_port: int, broker: Broker
) -> None:
    """A worker stopped while it holds refused events does not wait out the hold (up to
    PUBLISH_HOLD, past its WORKER_SHUTDOWN_TIMEOUT): it gives their deliveries back at once,
    unsettled, and the worker that takes them publishes the events once the queue has room."""
    system = make_system()
    system.seed({"limited": 1_000}, {"pen": 1})
    system.start_api(api_port)
    first = system.start_worker("workers.credit_check", name="first")

    _fill(broker, topology.FULFILMENT.name)
    reserved: list[str] = []
    try:
        for attempt in eventually(20, every=0.2):
            with attempt:
                reserved.append(_reserve(system))
                assert "holding a message the broker did not take" in first.log()
        stopping = time.monotonic()
        assert first.terminate(within=WORKER_SHUTDOWN_TIMEOUT), first.log()
        took = time.monotonic() - stopping
    finally:
        broker.rabbitmqctl("clear_policy", "-p", broker.vhost, "full")
    system.running.remove(first)
    assert first.popen.returncode == 0, first.log()
    assert took < WORKER_SHUTDOWN_TIMEOUT / 2, took
    assert "Traceback" not in first.log(), first.log()

    system.start_worker("workers.fulfilment")
    system.start_worker("workers.credit_check", name="second")
    for attempt in eventually(REPLACE_AFTER + 20, every=0.5):
        with attempt:
            assert [r for r in reserved if not _fulfilled(system, r)] == []
