"""Clients that are slow to send a request, or never send one: bounded by the API's
REQUEST_READ_TIMEOUT (``api/http_protocol.py``)."""

import json
import socket
import time
from collections.abc import Callable

from tests.reliability.test_bad_input import _until_closed
from tests.stack import System

READ_TIMEOUT = 2.0  # REQUEST_READ_TIMEOUT, for the test below


def test_a_request_that_does_not_arrive_in_time_is_408_and_an_idle_connection_is_closed(
    make_system: Callable[[], System], api_port: int
) -> None:
    """uvicorn times out neither a connection that never sends a request, nor a request's head
    or body trickling in: a fault campaign held 4,600 such connections for 100 s, none closed,
    and 20,100 idle ones took the API to its open-files limit, turning every new client away.
    A request now has REQUEST_READ_TIMEOUT to arrive whole, from its first byte, and a new
    connection that sends nothing is closed after KEEP_ALIVE_TIMEOUT, as an idle one between
    two requests is; a request that takes longer to answer is not cut by either."""
    system = make_system()
    system.start_api(
        api_port,
        REQUEST_READ_TIMEOUT=str(READ_TIMEOUT),
        KEEP_ALIVE_TIMEOUT=str(int(READ_TIMEOUT)),
        RESERVATION_REPLY_TIMEOUT="3",
    )
    port = int(api_port)

    def answer_to(sent: bytes) -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT * 5) as sock:
            start = time.monotonic()
            if sent:
                sock.sendall(sent)
            answer = _until_closed(sock)
            return answer, time.monotonic() - start

    # Nothing sent: closed after the keep-alive timeout, without an answer.
    answer, took = answer_to(b"")
    assert answer == b"" and READ_TIMEOUT - 0.5 < took < READ_TIMEOUT * 3, (answer, took)
    # A head, or a body, that stops coming: 408.
    head = b"GET /users/alice HTTP/1.1\r\nHost: x\r\nX-Slow: "
    body = b'{"username": "alice", '
    post = b"POST /reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for sent in (head, post + b"Content-Length: 60\r\n\r\n" + body):
        answer, took = answer_to(sent)
        status, _, rest = answer.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout", answer[:300]
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
            "detail": f"the request did not arrive within {READ_TIMEOUT:g} seconds",
            "trace_id": None,
        }
        assert took < READ_TIMEOUT * 3, took
    # Arrived whole, answered later than the read timeout (no worker: a 202 after 3 s).
    reservation = b'{"username": "alice", "item_id": "book-1"}'
    whole = post + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(reservation)
    answer, took = answer_to(whole + reservation)
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    assert took > READ_TIMEOUT, took

    # A bare CRLF after an answered request (httptools skips it) cancelled uvicorn's keep-alive
    # timeout, and no timer was left: the connection stayed open for good (a review).
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT * 5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = b""
        while not answered.endswith(b'{"status":"ok"}'):
            answered += sock.recv(65536)
        assert answered.startswith(b"HTTP/1.1 200 "), answered
        start = time.monotonic()
        sock.sendall(b"\r\n")
        assert _until_closed(sock) == b""
        assert time.monotonic() - start < READ_TIMEOUT * 3
    # Pipelined behind a request still being answered (a 202 after 3 s), a request whose body
    # stops coming: its 408 comes after that answer, never in its place.
    keep_alive = post + b"Content-Length: %d\r\n\r\n" % len(reservation) + reservation
    answer, _ = answer_to(keep_alive + post + b"Content-Length: 60\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    assert b"HTTP/1.1 408 " in answer.partition(b"\r\n\r\n")[2], answer

    api = system.running[-1]
    assert api.log().count("not received whole within") == 3, api.log()
    assert "Traceback" not in api.log(), api.log()
