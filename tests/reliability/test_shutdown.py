"""Graceful shutdown: SIGTERM during a burst loses nothing and processes nothing twice."""

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aio_pika
import httpx

from messaging import topology
from tests.processes import Process
from tests.stack import System
from tests.waiting import eventually, eventually_async

BURST = 150
CREDITS = 10_000


def _checked(process: Process) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in process.log().splitlines() if x.startswith("{")]
    return [line for line in lines if line.get("event") == "credit checked"]


async def test_sigterm_worker_during_a_burst(
    make_system: Callable[[], System], api_port: int
) -> None:
    system = make_system()
    system.seed({"burst": CREDITS}, {"pen": 1})
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="30")
    first = system.start_worker("workers.credit_check", name="first")
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=system.api_url, timeout=60, limits=limits) as client:
        burst = [
            asyncio.create_task(
                client.post("/reservations", json={"username": "burst", "item_id": "pen"})
            )
            for _ in range(BURST)
        ]
        async for attempt in eventually_async(20, every=0.05):
            with attempt:
                assert len(_checked(first)) >= 10
        first.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait_exit, 15) == 0, first.log()
        system.running.remove(first)
        second = await asyncio.to_thread(system.start_worker, "workers.credit_check", "second")
        responses = await asyncio.gather(*burst)

    assert "stopping: no new messages" in first.log()
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 202}, statuses
    checked = _checked(first) + _checked(second)
    per_reservation = Counter(str(line["reservation_id"]) for line in checked)
    ids = {r.json()["reservation_id"] for r in responses}
    # Every reservation processed, each exactly once: nothing lost, nothing redelivered twice.
    assert set(per_reservation) == ids
    assert set(per_reservation.values()) == {1}
    assert not [line for line in checked if line["replayed"]]
    async with httpx.AsyncClient(base_url=system.api_url, timeout=5) as client:
        credits = (await client.get("/users/burst")).json()["credits"]
    assert credits == CREDITS - BURST
    print(  # noqa: T201
        f"\nSIGTERM after {len(_checked(first))} of {BURST}; the rest by the next worker; "
        f"answers {dict(statuses)}; each processed once"
    )


def test_sigterm_api_finishes_requests_in_flight(
    make_system: Callable[[], System], api_port: int, amqp_url: str
) -> None:
    system = make_system()
    api = system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="10")
    in_flight = 8
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        answers = [
            pool.submit(
                httpx.post,
                f"{system.api_url}/reservations",
                json={"username": "alice", "item_id": "book-1"},
                timeout=30,
            )
            for _ in range(in_flight)
        ]
        # No worker yet: every request is published and waiting for its reply.
        for attempt in eventually(10, every=0.1):
            with attempt:
                assert asyncio.run(_queued(amqp_url)) == in_flight
        api.popen.send_signal(signal.SIGTERM)
        for attempt in eventually(10, every=0.1):
            with attempt:
                assert _refused(f"{system.api_url}/healthz"), "new requests still accepted"
        system.start_worker("workers.credit_check")
        responses = [answer.result(timeout=30) for answer in answers]
    assert [r.status_code for r in responses] == [201] * in_flight
    assert api.wait_exit(15) in (0, -signal.SIGTERM)
    system.running.remove(api)


def _refused(url: str) -> bool:
    """True once the API takes no new request.

    A connection the kernel accepted just before uvicorn closed its socket is closed unanswered
    (RemoteProtocolError); after that, connecting is refused (ConnectError).
    """
    try:
        httpx.get(url, timeout=2)
    except (httpx.ConnectError, httpx.RemoteProtocolError):
        return True
    return False


async def _queued(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        spec = topology.CREDIT_CHECK
        queue = await channel.declare_queue(spec.name, durable=True, arguments=dict(spec.arguments))
        count: int = queue.declaration_result.message_count or 0
        return count
    finally:
        await connection.close()
