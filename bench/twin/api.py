"""``python -m bench.twin.api``: the twin's HTTP API, a bare ASGI app on uvicorn.

uvloop and httptools, orjson bodies, no framework and no middleware stack: the lifespan
builds the broker channel and the request/reply client; ``POST /reservations`` publishes the
request, awaits the reply, and answers as ``api/`` does. ``GET /readyz`` and ``/healthz`` for
whoever waits on it. Traced, each request is one SERVER span (continuing an incoming
``traceparent``) around the aio-pika PRODUCER span of the request. One log line per request.
"""

import logging
import uuid
from typing import Any

import orjson
import uvicorn
from aio_pika.abc import AbstractRobustConnection
from opentelemetry.trace import Span

from bench.twin import amqp, answers, contracts
from bench.twin.rpc import Rpc, Unavailable
from bench.twin.settings import TwinSettings, from_env
from bench.twin.tracing import Tracing, current_trace_id, set_up
from bench.twin.worker import configure_logging
from messaging import topology

SERVICE_NAME = "twin-api"
ROUTE = "/reservations"
MAX_BODY_BYTES = 4096
log = logging.getLogger("bench.twin.api")
Scope = dict[str, Any]
JSON = [(b"content-type", b"application/json")]


class TwinApi:
    def __init__(self, settings: TwinSettings) -> None:
        self.settings = settings
        self.tracing = Tracing(None, None)
        self.rpc: Rpc | None = None
        self.connection: AbstractRobustConnection | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == ROUTE:
            body = await _read(receive)
            if self.tracing.enabled:
                status, payload, headers = await self._traced(scope, body)
            else:
                status, payload, headers = await self._reserve(body)
        elif method == "GET" and path in ("/readyz", "/healthz"):
            up = self.connection is not None and not self.connection.is_closed
            status, payload, headers = (200 if up else 503), {"broker": "up" if up else "down"}, []
        else:
            status, payload, headers = 404, {"detail": "Not Found", "trace_id": None}, []
        trace_id = payload.get("trace_id")
        if trace_id:
            headers = [*headers, (b"x-trace-id", trace_id.encode())]
        content = orjson.dumps(payload)
        headers = [*JSON, (b"content-length", str(len(content)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _traced(self, scope: Scope, body: bytes) -> answers.Answer:
        traceparent = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None
        )
        with self.tracing.server_span(f"POST {ROUTE}", traceparent) as span:
            answer = await self._reserve(body, span)
            span.set_attributes(
                {
                    "http.request.method": "POST",
                    "http.route": ROUTE,
                    "url.path": ROUTE,
                    "http.response.status_code": answer[0],
                }
            )
            return answer

    async def _reserve(self, body: bytes, span: Span | None = None) -> answers.Answer:
        parsed = answers.parse_request(body)
        if isinstance(parsed, list):
            return answers.invalid(parsed, current_trace_id())
        username, item_id = parsed
        rid = str(uuid.uuid4())
        assert self.rpc is not None
        if span is not None:
            span.set_attribute("reservation.id", rid)
        try:
            reply = await self.rpc.call(contracts.requested(rid, username, item_id), rid)
        except Unavailable as exc:
            log.warning("broker unavailable: %s", exc)
            return answers.unavailable(current_trace_id())
        answer = answers.from_reply(rid, reply, current_trace_id(), (username, item_id))
        status = answer[0]
        if span is not None:
            span.set_attribute("reservation.outcome", answer[1].get("status", ""))
        log.info("reservation %s answered %d trace_id=%s", rid, status, answer[1]["trace_id"])
        return answer

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        self.tracing = set_up(SERVICE_NAME, self.settings.traced)
        self.connection, channel, declared = await amqp.open_channel(self.settings.amqp_url, None)
        self.rpc = Rpc(
            channel, declared.exchanges[topology.RESERVATIONS.name], self.settings.reply_timeout
        )
        await self.rpc.start()
        log.info("twin api ready")
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.connection.close()
        self.tracing.shutdown()
        await send({"type": "lifespan.shutdown.complete"})


async def _read(receive: Any) -> bytes:
    """The request body, at most MAX_BODY_BYTES (beyond that, what was read: a 422)."""
    body: bytes = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > MAX_BODY_BYTES:
            return body


def main() -> None:
    configure_logging()
    settings = from_env()
    uvicorn.run(
        TwinApi(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
