"""uvicorn's httptools protocol, with a bound on what a request sends besides its body, a 503
for a request that the shutdown cut short, and JSON for the 400 that answers what is not HTTP.

httptools, the parser uvicorn picks when it is installed, sets none: it gathers a request line,
a header or a chunked body's trailers of any length on the event loop, at a cost that grows
faster than the length. A fault campaign's single request with a 64 MiB header took 6.5 s and
stalled every other request on the API for that long (its ``/healthz`` probes took 3.5–4.6 s
instead of 0.02 s); 64 MiB of small trailers held some 960 MiB. h11, uvicorn's other parser,
refuses a head over 16 KiB. Here a request's head, its chunks' framing and its trailers may
take ``MAX_HEAD_BYTES`` (64 KiB by default: trace headers of tens of kilobytes are still
ignored rather than refused, as ``tests/reliability/test_bad_input.py`` checks); past that it
is answered 431 and its connection closed. The body has its own limit (``api/limits.py``).

The count is kept per read from the socket: each read's bytes, less the body bytes the parser
handed on. A read in which a request ends starts the count afresh for the next one, so a
request pipelined behind another within one read is counted from its next read on: the bound
holds within one read (at most a few hundred KiB), never more.

A request that asks to switch protocols (``Connection: Upgrade``: ``h2c`` from ``curl --http2``
or Java's HttpClient) is served as HTTP/1.1 with its ``Content-Length`` body, where httptools
took that body for the new protocol's bytes (:meth:`BoundedHeadProtocol._parse`).

On SIGTERM uvicorn lets the requests in flight finish for ``API_SHUTDOWN_TIMEOUT`` seconds, then
cancels the rest and answers each with its plain-text 500 "Internal Server Error" (a fault
campaign's keyed requests, waiting on a SQLite file another process had locked). Nothing failed:
the service stopped. Such a request is answered 503 ``{detail, trace_id: null}`` with
``Retry-After`` instead. With the default settings, a request cut short is one still waiting on
the database (a lock another process holds, say): the timeout outlasts an unkeyed reservation's
publisher confirm and reply (5 s each). Its work may still finish after the answer, as with a
database 503: a reservation retried with the same ``Idempotency-Key`` gets the same reservation,
and a top-up, a plain increment, may have been applied.

A reservation whose request had gone to the broker is queued, or may be: a 503 there ("retry")
would have a client without an ``Idempotency-Key`` reserve twice (a review found it with a
reply timeout longer than the shutdown's). Its route says so as the request goes out
(:func:`answer_if_cut_short`), and such a request is answered what that gives instead: a 202
with ``Location``, as when the reply does not come in time; a 503 again once the broker
returned or refused it. That is said as a copy starts out: cut short in the moment before its
frame is written (waiting for the channel's lock), or while a returned copy's queue is bound
again, a request is answered 202 though nothing was queued, and its ``Location`` answers 404
for good (the same as a request whose confirm was lost when its API stopped).
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Literal

import httptools
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from api.settings import DEFAULT_MAX_HEAD_BYTES, DEFAULT_READ_TIMEOUT

log = logging.getLogger(__name__)

# Seconds an idle keep-alive connection stays open once the shutdown begins. uvicorn closed it
# at once, and a request its client had sent just before (still on its way) met a closed
# connection, no answer, and no way to tell what became of it (a fault campaign: up to 21 of
# 50 POSTs in flight). Now such a request is served, and its connection then closed.
SHUTDOWN_GRACE = 0.5
# Seconds a connection answered with a refusal goes on reading (and dropping) what its client
# sends, so that the client reads the answer before the connection closes (nginx's lingering
# close does the same).
LINGER = 2.0
# The longest request target httptools parses (its offsets are 16-bit).
MAX_TARGET_BYTES = 65535


class BoundedHeadProtocol(HttpToolsProtocol):
    """Counts what a request sends besides its body; refuses it past ``max_head_bytes``. Gives
    a request ``read_timeout`` seconds to arrive whole, from its first byte, and closes a new
    connection that sends nothing for uvicorn's keep-alive timeout."""

    max_head_bytes = DEFAULT_MAX_HEAD_BYTES
    read_timeout = DEFAULT_READ_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._counted = 0  # the current request's bytes, its body's excepted
        self._fed_body = 0  # body bytes the parser handed on during this read
        self._ended = False  # a request ended during this read
        self._in_head = True  # between a request's start and the end of its headers
        self._refused = False
        self._begun = False  # a byte of the current request has arrived
        self._draining = False  # the shutdown began: serve what arrives, then close
        self._upgrade_body_left = 0  # body bytes still to come of a request asking to Upgrade
        super().connection_made(transport)
        # uvicorn arms its keep-alive timeout only once a first response is sent: a connection
        # that never sent a byte stayed open for good (a fault campaign's 20,100 idle sockets
        # took the API to its open-files limit, and every new client was turned away). A new
        # connection is idle like one between two requests: the same timeout, which outlasts a
        # load balancer's own (one that opens connections ahead of its requests, say).
        self._read_timer: asyncio.TimerHandle | None = None
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # a closing TLS transport may still deliver data: none reaches the parser
        self._fed_body, self._ended = 0, False
        self._unset_keepalive_if_required()
        self._parse(data)
        if self._refused or self.transport.is_closing():
            return  # refused as its head ended, uvicorn refused it (a 400), or the app closed it
        if self._read_timer is None and self.timeout_keep_alive_task is None and self._idle():
            # Bytes that begin no request (a bare CRLF between two: httptools skips it) cancel
            # uvicorn's keep-alive timeout: without this, nothing would time the connection out.
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)
        if self._ended:
            self._counted = 0
            return
        self._counted += len(data) - self._fed_body
        if self._counted > self.max_head_bytes:
            self._refuse()

    def _parse(self, data: bytes) -> None:
        """uvicorn's parse of a read, but for a request that asks to switch protocols (an
        ``Upgrade`` this API does not take up: ``h2c``, which ``curl --http2`` and Java's
        HttpClient send on ``http://``, or a WebSocket): it is served as HTTP/1.1, as RFC 9110
        lets a server do. httptools takes such a request to end with its headers and the
        bytes after them for the new protocol's, and uvicorn dropped those: the request ran
        without its body (a 422), and a body sent in a later read ran as a request of its own
        (a review's: a top-up hidden in a reservation's body was applied). Here they are its
        body, ``Content-Length`` bytes of them, then the parse goes on."""
        while data and not self._refused:
            if self._upgrade_body_left:
                body = data[: self._upgrade_body_left]
                data = data[len(body) :]
                self._upgrade_body_left -= len(body)
                self.on_body(body)
                if not self._upgrade_body_left:
                    self.on_message_complete()
                continue
            try:
                self.parser.feed_data(data)
                return
            except httptools.HttpParserError:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
                return
            except httptools.HttpParserUpgrade as upgrade:
                data = data[upgrade.args[0] :]  # its body, or the next request

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return  # the rest of a read the parser goes on with after a refusal: dropped
        self._fed_body += len(body)
        super().on_body(body)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        # A head that arrived whole in one read is counted only after the parser has read it,
        # and uvicorn parses the request target here: httptools cannot parse one over 65535
        # bytes, which uvicorn answered as "not valid HTTP" (a 400) before the count could.
        # Refused, the request goes no further: the parser's other callbacks do nothing.
        if len(self.url) > self.max_head_bytes:
            self._refuse()
            return
        if len(self.url) > MAX_TARGET_BYTES:
            self._refuse(kind="target")
            return
        upgrade = self.parser.should_upgrade()
        if upgrade and any(name == b"transfer-encoding" for name, _ in self.headers):
            # Its chunks would be read as the new protocol's bytes: refused before it runs.
            self._refuse(kind="upgrade")
            return
        self._in_head = False
        super().on_headers_complete()
        if upgrade:  # served as HTTP/1.1: its body follows (_parse)
            lengths = [value for name, value in self.headers if name == b"content-length"]
            self._upgrade_body_left = int(lengths[0]) if lengths else 0
        cycle = self.cycle
        if cycle is not None:  # uvicorn sends this when the app raised before it answered
            cycle.send_500_response = partial(_answer_unfinished, cycle, cycle.send_500_response)  # type: ignore[method-assign]
            if self._draining:
                cycle.keep_alive = False  # answered, then closed

    def shutdown(self) -> None:
        """The graceful shutdown begins. A request in progress finishes, then its connection
        closes (uvicorn's own). An idle one stays open :data:`SHUTDOWN_GRACE` seconds for a
        request already on its way, which is served and then closed."""
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()
            return
        self._draining = True
        self.loop.call_later(SHUTDOWN_GRACE, self._close_when_idle)

    def _close_when_idle(self) -> None:
        if self.transport.is_closing():
            return
        if self._idle():
            self.transport.close()
        else:  # a request arrived: answered, then closed (one still arriving: see above)
            for cycle in [self.cycle, *(pipelined for pipelined, _ in self.pipeline)]:
                if cycle is not None:
                    cycle.keep_alive = False

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._begun = True
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)
        super().on_message_begin()

    def on_message_complete(self) -> None:
        if self._refused or self._upgrade_body_left:
            return  # refused, or an ignored Upgrade's body still to come: complete after it
        self._in_head, self._ended, self._begun = True, True, False
        self._stop_read_timer()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _idle(self) -> bool:
        """No request is being received, answered or waiting to be."""
        cycle = self.cycle
        return not self._begun and not self.pipeline and (cycle is None or cycle.response_complete)

    def _read_timed_out(self) -> None:
        """The request did not arrive whole within ``read_timeout``: a connection that sent
        nothing is closed (as uvicorn closes an idle keep-alive one), a request cut short or
        trickling in (slowloris) is answered 408 and its connection closed."""
        self._read_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self.pipeline:
            # Pipelined behind a request still being answered: uvicorn reads no more of it
            # until then, so the wait is ours, and a 408 now would read as that answer.
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)
            return
        cycle = self.cycle
        if not self._begun or (cycle is not None and cycle.response_started and not self._in_head):
            self.transport.close()  # nothing to answer, or this request's answer has begun
            return
        if self._in_head and cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # an earlier request's answer first (see _refuse)
            self.flow.pause_reading()
            return
        log.warning(
            "request refused: not received whole within %gs (REQUEST_READ_TIMEOUT)",
            self.read_timeout,
        )
        body = b'{"detail":"the request did not arrive within '
        body += f'{self.read_timeout:g} seconds","trace_id":null}}'.encode()
        self._answer_and_close(408, body)

    def _refuse(self, *, kind: Literal["head", "target", "upgrade"] = "head") -> None:
        """431 for a head over ``max_head_bytes``; 414 for a request target longer than
        httptools parses, within a ``max_head_bytes`` set above that; 400 for a request that
        asks to ``Upgrade`` with a chunked body (see :meth:`_parse`). The connection closes."""
        self._refused = True
        if kind == "target":
            status, detail = 414, f"the request target exceeds {MAX_TARGET_BYTES} bytes"
            log.warning("request refused: its %s", detail.removeprefix("the request "))
        elif kind == "upgrade":
            status, detail = 400, "send this request without Upgrade, or with Content-Length"
            log.warning("request refused: an Upgrade with a chunked body")
        else:
            status = 431
            detail = f"the request line, headers and trailers exceed {self.max_head_bytes} bytes"
            log.warning(
                "request refused: its %s (MAX_HEAD_BYTES)", detail.removeprefix("the request ")
            )
        if self._in_head and self.cycle is not None and not self.cycle.response_complete:
            # An earlier request on this connection is still being answered: a refusal now
            # would read as its answer. It is answered, then the connection closes, and the
            # request over the bound gets no answer.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        body = json.dumps({"detail": detail, "trace_id": None}, separators=(",", ":"))
        self._answer_and_close(status, body.encode())

    def send_400_response(self, msg: str) -> None:
        """What uvicorn answers a request httptools cannot parse ("Invalid HTTP request
        received.", logged as a WARNING): JSON, like every other error of the API, instead of
        its plain-text 400; nothing for a request already refused."""
        if self._refused:
            return
        self._answer_and_close(400, _NOT_HTTP)

    def _answer_and_close(self, status: int, body: bytes) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self._refused = True  # what the client still sends is read and dropped
        self._stop_read_timer()
        self._unset_keepalive_if_required()
        for cycle in [self.cycle, *(pipelined for pipelined, _ in self.pipeline)]:
            if cycle is not None and not cycle.response_complete:
                # An app already running (a head over the bound that arrived with its start)
                # writes nothing more, and reads the end of the request.
                cycle.disconnected, cycle.waiting_for_100_continue = True, False
                cycle.message_event.set()
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            # Closed at once with bytes of the request still unread, the socket sends a reset,
            # which can reach the client before it has read the answer (a 200 KB URL sent whole
            # met "connection reset by peer"): the answer and a FIN go first, and the
            # connection closes when the client closes its end, or after LINGER seconds.
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


# uvicorn's line as its graceful shutdown ends with requests still running.
_CANCELLING_TASKS = "Cancel %s running task(s), timeout graceful shutdown exceeded"


class _CutShortIsAnswered(logging.Filter):
    """uvicorn logs an ERROR with a traceback, "Exception in ASGI application", for each request
    it cancels at the end of the graceful shutdown. Such a request is answered here, and
    :func:`_answer_unfinished` logs one WARNING line saying what: this drops uvicorn's (the
    same test as the answer's: the task is being cancelled). Its line saying how many it
    cancels is a WARNING too: the shutdown ends as ``API_SHUTDOWN_TIMEOUT`` says, and each
    request is answered; nothing failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _CANCELLING_TASKS and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, asyncio.CancelledError) and _cancelling())


def _cancelling() -> bool:
    """The current task is being cancelled (False outside a task, or off the event loop)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop: a record logged on another thread
        return False
    return task is not None and task.cancelling() > 0


def quiet_shutdown_cuts() -> None:
    """Install the filter on uvicorn's error logger (once per process)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _CutShortIsAnswered) for f in logger.filters):
        logger.addFilter(_CutShortIsAnswered())


_NOT_HTTP = b'{"detail":"the request is not valid HTTP/1.1","trace_id":null}'
_SHUTTING_DOWN = b'{"detail":"the service is shutting down; retry shortly","trace_id":null}'


# Where a route leaves what its request is answered if the shutdown cuts it short: in the
# request's ASGI state, which every layer of the app shares with the server's scope.
_CUT_SHORT_ANSWER = "cut_short_answer"


def answer_if_cut_short(request: Request, answer: Callable[[], Response], queued: bool) -> None:
    """From now on, should the shutdown cut ``request`` short, answer it ``answer()`` (built
    then) instead of the 503 that says "retry"; unless not ``queued`` (the 503 again)."""
    setattr(request.state, _CUT_SHORT_ANSWER, answer if queued else None)


async def _answer_unfinished(
    cycle: RequestResponseCycle, send_500: Callable[[], Awaitable[None]]
) -> None:
    """What uvicorn sends for a request whose app raised before it answered: its 500, but for a
    request that the shutdown cancelled (uvicorn cancels nothing else) what its route said
    (:func:`answer_if_cut_short`), or a 503."""
    if not _cancelling():
        await send_500()
        return
    answer = (cycle.scope.get("state") or {}).get(_CUT_SHORT_ANSWER)
    if answer is None:
        status, body = 503, _SHUTTING_DOWN
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_SHUTTING_DOWN)).encode()),
            (b"retry-after", b"1"),
        ]
    else:
        response = answer()
        status, body, headers = response.status_code, bytes(response.body), response.raw_headers
    log.warning("request cut short by the shutdown: answered %d", status)
    headers = [*headers, (b"connection", b"close")]
    await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
    await cycle.send({"type": "http.response.body", "body": body, "more_body": False})


def bounded_head(
    max_head_bytes: int, read_timeout: float = DEFAULT_READ_TIMEOUT
) -> type[BoundedHeadProtocol]:
    """The protocol class for uvicorn's ``http`` option, with these bounds."""
    bounds = {"max_head_bytes": max_head_bytes, "read_timeout": read_timeout}
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), bounds)
