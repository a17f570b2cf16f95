"""uvicorn's httptools protocol, with a bound on the size of a request's head.

httptools, the parser uvicorn picks when it is installed, sets none: it gathers a request line
or a header of any length on the event loop, at a cost that grows faster than the length. A
fault campaign's single request with a 64 MiB header took 6.5 s and stalled every other
request on the API for that long (its ``/healthz`` probes took 3.5–4.6 s instead of 0.02 s).
h11, uvicorn's other parser, refuses a head over 16 KiB. Here the head may be
``MAX_HEAD_BYTES`` (64 KiB by default: trace headers of tens of kilobytes are still ignored
rather than refused, as ``tests/reliability/test_bad_input.py`` checks); past that the request
is answered 431 and its connection closed, before the parser has gathered it.
"""

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)
HEAD_END = b"\r\n\r\n"


class BoundedHeadProtocol(HttpToolsProtocol):
    """Counts what arrives from the start of a request until its headers are complete."""

    max_head_bytes = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0
        self._in_head = True  # a connection's first bytes are a request's head
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            end = data.find(HEAD_END)  # what follows it is a body: the body's limit is its own
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.max_head_bytes:
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # what comes next on this connection is the next request's head
        super().on_message_complete()

    def _refuse(self) -> None:
        log.warning(
            "request refused: its line and headers exceed %d bytes (MAX_HEAD_BYTES)",
            self.max_head_bytes,
        )
        body = (
            b'{"detail":"the request line and headers exceed '
            + str(self.max_head_bytes).encode()
            + b' bytes"}'
        )
        content = [STATUS_LINE[431]]
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
        self.transport.write(b"".join(content))
        self.transport.close()
        self._in_head = False  # nothing more is read from a closing transport


def bounded_head(max_head_bytes: int) -> type[BoundedHeadProtocol]:
    """The protocol class for uvicorn's ``http`` option, with this bound."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"max_head_bytes": max_head_bytes})
