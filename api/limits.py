"""Request limits at the edge: body size and content type, answered before any work is done.

For a POST, the only method any route takes a body with: a body larger than ``MAX_BODY_BYTES``
gets 413 (checked on ``Content-Length``, and while reading a chunked body); a body that is not
JSON gets 415, and so does one with two Content-Type headers (FastAPI would read the first) or
a ``charset`` other than UTF-8, or a body in UTF-16 or UTF-32 (RFC 8259: JSON between
systems is UTF-8), or one with a ``Content-Encoding`` (gzip, say: none is decompressed, RFC
9110 15.5.16). This runs before routing, so a POST with a body to a route that takes none gets
them too; a POST without a body (no ``Content-Length``, or 0, and no
``Transfer-Encoding``) goes on unchecked. Both are pure ASGI, so a hostile request never
reaches FastAPI's JSON parsing, and never costs more than the limit in memory.

An HTTP/1.1 request without a ``Host`` header, or with two, is answered 400 (RFC 9112 3.2).

A HEAD request is routed as the GET it stands for (RFC 9110 9.3.2; FastAPI's GET routes do not
take HEAD). Uvicorn still sees HEAD and sends no body, and the request's span keeps its method.
"""

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.tracing import current_trace_id

# Another method (PUT, PATCH) goes on to routing, which answers 405 or 404, rather than 415
# for a body no route would read.
_BODY_METHODS = {"POST"}
_NOT_JSON = "send the request body as application/json, in UTF-8"
_NOT_ENCODED = "send the request body without a Content-Encoding: it is not decompressed"


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("http_version") == "1.1":
            if sum(name == b"host" for name, _ in scope["headers"]) != 1:
                # RFC 9112 3.2 (a server MUST answer 400); httptools lets it through.
                await _reject(send, 400, "an HTTP/1.1 request carries one Host header")
                return
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            if scope.get("method") == "HEAD":
                scope = {**scope, "method": "GET"}
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # A client that sent `Expect: 100-continue` holds its body back until it is asked for
        # it, which a refusal before reading it never does: the server would wait for a body
        # that does not come and read the client's next request as it. Such a connection is
        # closed after the refusal (RFC 9110 10.1.1). Any other client sends its body at once,
        # and uvicorn reads the rest of it past the refusal: the connection stays usable.
        close = headers.get(b"expect", b"").strip().lower() == b"100-continue"
        length = headers.get(b"content-length", b"").strip(b" \t")  # httptools keeps trailing OWS
        if length and (not length.isdigit() or int(length) > self.max_body_bytes):
            too_large = f"request body larger than {self.max_body_bytes} bytes"
            await _reject(send, 413, too_large, close=close)
            return
        has_body = int(length) > 0 if length else b"transfer-encoding" in headers
        if not has_body:
            # No body at all: nothing to bound or decode. Routing answers (405 on a route that
            # takes no POST), or the endpoint (422: the body is missing), not a 415.
            await self.app(scope, receive, send)
            return
        content_types = [value for name, value in scope["headers"] if name == b"content-type"]
        media_type, _, parameters = b"".join(content_types).partition(b";")
        if (
            len(content_types) != 1
            or media_type.strip().lower() != b"application/json"
            or not _utf8(parameters)
        ):
            await _reject(send, 415, _NOT_JSON, close=close)
            return
        if headers.get(b"content-encoding", b"identity").strip().lower() != b"identity":
            # gzip, say: read as it is, the body was parsed as if it were not compressed.
            await _reject(send, 415, _NOT_ENCODED, close=close)
            return
        body = bytearray()
        more_body = True
        while more_body:  # at most max_body_bytes are ever held in memory
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _reject(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                return
        if b"\x00" in body:
            # UTF-16 or UTF-32: JSON text has no NUL byte in UTF-8 (a NUL in a string is escaped),
            # and FastAPI's json.loads would take these encodings for what they are.
            await _reject(send, 415, _NOT_JSON)
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _utf8(parameters: bytes) -> bool:
    """Whether a media type's parameters (after the first ``;``) allow a UTF-8 body: no
    ``charset``, or ``utf-8`` (any case, quoted or not)."""
    for parameter in parameters.split(b";"):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() not in (
            b"utf-8",
            b"utf8",
        ):
            return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the already-read body to the app, then pass through (e.g. http.disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _reject(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    """Answer with an error; ``close``: and close the connection after it."""
    body = orjson.dumps({"detail": detail, "trace_id": current_trace_id()})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
