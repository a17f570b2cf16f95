"""The twin API's request/reply over direct reply-to: bounded, and futures always removed.

Like ``messaging.rpc``: the request is persistent, ``mandatory``, confirmed by the broker
within ``PUBLISH_TIMEOUT_S`` (else :class:`Unavailable`, a 503); the reply is awaited at most
``timeout`` seconds (else ``None``, a 202); pending calls end when the channel closes.
"""

import asyncio
import logging
import uuid
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from bench.twin import amqp
from messaging.topology import DIRECT_REPLY_TO, RESERVATION_REQUESTED

PUBLISH_TIMEOUT_S = 5.0
log = logging.getLogger("bench.twin.rpc")


class Unavailable(RuntimeError):
    """The broker did not take the request."""


class Rpc:
    def __init__(self, channel: AbstractChannel, exchange: AbstractExchange, timeout: float):
        self._channel = channel
        self._exchange = exchange
        self._timeout = timeout
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}

    async def start(self) -> None:
        queue = await self._channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await queue.consume(self._on_reply, no_ack=True)
        self._channel.close_callbacks.add(self._on_close)

    async def call(self, body: bytes, reservation_id: str) -> bytes | None:
        """The reply's body, or None if none came in time (the outcome is then unknown)."""
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        message = amqp.persistent(
            body,
            reservation_id,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            message_type=RESERVATION_REQUESTED,
        )
        try:
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self._exchange.publish(message, RESERVATION_REQUESTED, mandatory=True)
            except (AMQPError, ConnectionError, TimeoutError) as exc:
                raise Unavailable(repr(exc)) from exc
            try:
                async with asyncio.timeout(self._timeout):
                    return await future
            except TimeoutError:
                return None
        finally:
            self._pending.pop(correlation_id, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None:
            log.warning("reply dropped: late or unknown correlation id")
        elif not future.done():
            future.set_result(message.body)

    def _on_close(self, *_: Any) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(None)
