"""The twin's broker side: the system's topology, confirm channels, and settling a delivery.

Queues, exchanges and their arguments come from ``messaging.topology`` (one source of truth;
a private vhost keeps the twin apart from the system), and messages are built by
``messaging.envelope``, the project's one place for that. Every channel has publisher confirms;
work queues are consumed with manual acks. A message that cannot be parsed is dead-lettered
with its reason; a failing one is requeued, and dead-lettered on its ``MAX_ATTEMPTS``-th try.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from bench.twin import contracts
from messaging import topology
from messaging.envelope import envelope

CONTENT_TYPE = "application/json"
MAX_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.2
log = logging.getLogger("bench.twin")
T = TypeVar("T")


async def open_channel(
    url: str, prefetch: int | None
) -> tuple[AbstractRobustConnection, AbstractChannel, topology.Declared]:
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch is not None:
        await channel.set_qos(prefetch_count=prefetch)
    return connection, channel, await topology.declare(channel)


def persistent(
    body: bytes,
    message_id: str,
    *,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_type: str | None = None,
) -> aio_pika.Message:
    return envelope(
        body,
        persistent=True,
        content_type=CONTENT_TYPE,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        message_type=message_type,
    )


def reply(body: bytes, message_id: str, correlation_id: str | None) -> aio_pika.Message:
    return envelope(
        body,
        persistent=False,
        content_type=CONTENT_TYPE,
        message_id=message_id,
        correlation_id=correlation_id,
    )


async def parsed(
    dlx: AbstractExchange, message: AbstractIncomingMessage, parse: Callable[[bytes], T]
) -> T | None:
    """The body parsed, or None once a poison message is dead-lettered with its reason."""
    try:
        if message.content_type != CONTENT_TYPE:
            raise contracts.Invalid(f"content type {message.content_type!r}")
        return parse(message.body)
    except contracts.Invalid as exc:
        log.warning("poison message dead-lettered: %s", exc)
        await dead_letter(dlx, message, f"invalid: {exc}")
        return None


async def dead_letter(dlx: AbstractExchange, message: AbstractIncomingMessage, reason: str) -> None:
    """Republish to the dead-letter exchange with the reason, then ack the original."""
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
    headers[topology.DEAD_LETTER_REASON] = reason[:256]
    await dlx.publish(
        envelope(
            message.body,
            persistent=True,
            content_type=message.content_type,
            message_id=message.message_id,
            headers=headers,
        ),
        message.routing_key or "",
        mandatory=True,
    )
    await message.ack()


async def failed(dlx: AbstractExchange, message: AbstractIncomingMessage, exc: Exception) -> None:
    """A real failure: requeue after a back-off, or dead-letter after MAX_ATTEMPTS."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    attempt = (count if isinstance(count, int) else 0) + 1
    log.error("handler failed (attempt %d)", attempt, exc_info=exc)
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    if attempt >= MAX_ATTEMPTS:
        await dead_letter(dlx, message, f"handler failed {attempt} times: {type(exc).__name__}")
        return
    await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    await message.reject(requeue=True)
