"""Graceful shutdown: SIGTERM during a burst loses nothing and processes nothing twice."""

import asyncio
import json
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aio_pika
import httpx
import pytest

from devtools.processes import python_module
from messaging import topology
from tests import processes
from tests.hop import Hop
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


def test_sigterm_the_moment_a_worker_starts_consuming_is_a_graceful_stop(
    make_system: Callable[[], System],
) -> None:
    """The earliest SIGTERM a deployment can send (a test sends it once the ``consuming`` line
    is out): the worker stops gracefully, exit code 0. Its signal handlers were installed only
    after the consumer started, so a SIGTERM in between was the default kill, exit -15 (once in
    CI, in a test that stops a worker just started)."""
    system = make_system()
    system.migrate()
    worker = processes.spawn(
        "sigterm-on-consuming",
        python_module("tests.reliability.sigterm_on_consuming"),
        system.base_env,
        system.log_dir,
    )
    assert worker.wait_exit(within=30) == 0, worker.log()
    log = worker.log()
    assert '"consuming"' in log and '"stopped"' in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("link", ["cut", "frozen"])
async def test_sigterm_worker_while_its_broker_link_is_down(
    make_system: Callable[[], System], broker_behind_a_hop: tuple[Hop, str], link: str
) -> None:
    """SIGTERM while the worker's connection to RabbitMQ is down and being restored, or silent:
    it stops within WORKER_SHUTDOWN_TIMEOUT, exit code 0, instead of waiting for the broker to
    come back (cancelling the consumer waits for the connection) and then exiting 1 with a
    traceback."""
    system = make_system()
    hop, through_hop = broker_behind_a_hop
    worker = await asyncio.to_thread(
        system.start_worker,
        "workers.credit_check",
        AMQP_URL=through_hop,
        WORKER_SHUTDOWN_TIMEOUT="5",
    )
    if link == "cut":
        await hop.down()  # the connection cut, and every reconnect refused
    else:
        hop.freeze()  # nothing passes, and no error either
    await asyncio.sleep(0.5)
    stop = worker.log_offset()  # the drop itself logs aiormq's warning, with its traceback
    worker.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait_exit, 20)
    system.running.remove(worker)
    assert code == 0, worker.log()
    stopping = worker.log_since(stop)
    assert "Traceback" not in stopping, stopping
    down = "the broker connection is down" if link == "cut" else "the broker did not answer"
    assert f"consumer not cancelled: {down}" in stopping


async def test_sigterm_api_while_its_broker_link_is_silent(
    make_system: Callable[[], System], api_port: int, broker_behind_a_hop: tuple[Hop, str]
) -> None:
    """SIGTERM while the API's broker connection is silent (frozen here; a broker that blocks
    the connection in a memory or disk alarm answers nothing either): it exits in bounded
    time. Cancelling the reply consumer waited for the broker's answer, so the API hung until
    the link came back (a fault campaign's alarm: until the alarm cleared, or SIGKILL)."""
    system = make_system()
    hop, through_hop = broker_behind_a_hop
    api = await asyncio.to_thread(system.start_api, api_port, AMQP_URL=through_hop)
    hop.freeze()
    stop = api.log_offset()
    api.popen.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(api.wait_exit, 15)
    system.running.remove(api)
    assert code in (0, -signal.SIGTERM), api.log()
    stopping = api.log_since(stop)
    assert "Traceback" not in stopping, stopping
    assert "consumer not cancelled" in stopping, stopping


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


def test_sigterm_api_answers_503_for_what_outlasts_its_shutdown_timeout(
    make_system: Callable[[], System], api_port: int, tmp_path: Path
) -> None:
    """A request still running when the shutdown timeout ends is cancelled by uvicorn, which
    answered it with a plain-text 500 (a fault campaign's keyed requests, waiting on a SQLite
    file that another process had locked). Nothing failed but the service's life: a 503 that
    says so, with Retry-After."""
    system = make_system()
    api = system.start_api(api_port, API_SHUTDOWN_TIMEOUT="1")
    holder = sqlite3.connect(str(tmp_path / "e2e.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock: the key claim waits
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(
                httpx.post,
                f"{system.api_url}/reservations",
                json={"username": "alice", "item_id": "book-1"},
                headers={"Idempotency-Key": "cut-short-by-the-shutdown"},
                timeout=30,
            )
            time.sleep(2)  # the request is in flight, its key claim waiting on the lock (10 s)
            assert not answer.done()
            api.popen.send_signal(signal.SIGTERM)
            response = answer.result(timeout=20)
    finally:
        holder.rollback()
        holder.close()
    assert response.status_code == 503, response.text
    assert response.json() == {
        "detail": "the service is shutting down; retry shortly",
        "trace_id": None,
    }
    assert response.headers["retry-after"] == "1"
    assert api.wait_exit(15) in (0, -signal.SIGTERM)
    system.running.remove(api)
    # One WARNING line, not uvicorn's ERROR with a traceback, for a request answered 503.
    assert "request cut short by the shutdown: answered 503" in api.log(), api.log()
    assert "Exception in ASGI application" not in api.log(), api.log()
    assert "Traceback" not in api.log(), api.log()
    # uvicorn's count of what it cut short, a WARNING: each request was answered.
    [cancelling] = [line for line in api.log().splitlines() if "running task(s)" in line]
    level = cancelling.lower().replace("uvicorn.error", "")  # the logger's name says error
    assert "warning" in level and "error" not in level, cancelling


def test_sigterm_api_answers_202_for_a_reservation_sent_before_it_was_cut_short(
    make_system: Callable[[], System], api_port: int, amqp_url: str
) -> None:
    """A reservation whose request is on the broker when the shutdown timeout ends (its reply
    timeout is the longer) is queued: answered 503 "retry", a client without an
    Idempotency-Key reserved twice (a review found it). It is pending: 202 and where to poll,
    and a worker that comes later charges it once."""
    system = make_system()
    system.seed({"carol": 30}, {"pen": 10})
    api = system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="30", API_SHUTDOWN_TIMEOUT="1")
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(
            httpx.post,
            f"{system.api_url}/reservations",
            json={"username": "carol", "item_id": "pen"},
            timeout=30,
        )
        for attempt in eventually(10, every=0.1):  # no worker: published, waiting for a reply
            with attempt:
                assert asyncio.run(_queued(amqp_url)) == 1
        api.popen.send_signal(signal.SIGTERM)
        response = answer.result(timeout=20)
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/reservations/{body['reservation_id']}"
    assert len(body["trace_id"]) == 32 and response.headers["x-trace-id"] == body["trace_id"]
    assert response.headers["connection"] == "close"
    assert api.wait_exit(15) in (0, -signal.SIGTERM)
    system.running.remove(api)
    assert "request cut short by the shutdown: answered 202" in api.log(), api.log()
    assert "Traceback" not in api.log(), api.log()

    system.start_worker("workers.credit_check")
    system.start_api(api_port, name="api-again")
    for attempt in eventually(20, every=0.2):
        with attempt:
            polled = httpx.get(f"{system.api_url}{response.headers['location']}", timeout=5)
            assert polled.status_code == 200, polled.text
    assert polled.json()["status"] == "confirmed"
    assert polled.json()["credits_left"] == 20
    assert httpx.get(f"{system.api_url}/users/carol", timeout=5).json()["credits"] == 20


def _one_response(connection: socket.socket) -> bytes:
    """One whole response: its head, then as many bytes as its ``Content-Length`` says (the
    body may come in a segment of its own)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def _refused(url: str) -> bool:
    """True once the API takes no new request.

    A connection the kernel accepted just before uvicorn closed its socket is closed unanswered
    (RemoteProtocolError), or reset if the request was still unread (ReadError: seen once in a
    clean-clone run); after that, connecting is refused (ConnectError).
    """
    try:
        httpx.get(url, timeout=2)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
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


def test_ctrl_c_stops_the_api_cleanly(make_system: Callable[[], System], api_port: int) -> None:
    """SIGINT (Ctrl-C in a terminal) is a graceful stop too: exit 0, and no traceback (a fault
    campaign saw two, and exit 130, once `python -m api` ran uvicorn's Server itself)."""
    system = make_system()
    api = system.start_api(api_port)
    assert httpx.get(f"{system.api_url}/healthz", timeout=5).status_code == 200
    api.popen.send_signal(signal.SIGINT)
    assert api.wait_exit(15) == 0, api.log()
    system.running.remove(api)
    assert "Traceback" not in api.log(), api.log()


def test_a_request_sent_on_an_idle_connection_as_the_shutdown_begins_is_answered(
    make_system: Callable[[], System], api_port: int
) -> None:
    """uvicorn closed idle keep-alive connections the moment its shutdown began: a request a
    client had just sent on one met a closed connection, and no answer (a fault campaign: up
    to 21 of 50 POSTs in flight). It is answered now, and the connection then closed."""
    system = make_system()
    api = system.start_api(api_port)
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{api_port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", api_port), timeout=5) as idle:
        idle.sendall(request)
        assert _one_response(idle).startswith(b"HTTP/1.1 200")  # kept alive, now idle
        api.popen.send_signal(signal.SIGTERM)
        for attempt in eventually(10, every=0.01):
            with attempt:  # the shutdown has begun: it takes no new connection
                assert _refused(f"{system.api_url}/healthz"), "new connections still accepted"
        idle.sendall(request)
        answer = b""
        while chunk := idle.recv(65536):  # until the API closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"connection: close" in answer.lower(), answer
    assert api.wait_exit(15) in (0, -signal.SIGTERM)
    system.running.remove(api)
