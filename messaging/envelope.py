"""The one place an AMQP message is built.

Every message this project sends is JSON with a ``headers`` table, so the instrumentation can
inject ``traceparent`` into it. Work that must survive a broker restart is persistent; a reply
is not (direct reply-to is at-most-once anyway).
"""

from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from messaging.messages import CONTENT_TYPE, Message
from messaging.topology import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
)


def envelope(
    body: bytes,
    *,
    persistent: bool,
    content_type: str | None = CONTENT_TYPE,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_type: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=dict(headers or {}),
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else None,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        type=message_type,
    )


# What the broker adds to a delivery about its deliveries, the worker's attempt count and a
# dead letter's reason: a copy the worker republishes (messaging.retry, messaging.dead_letter)
# starts without them.
_BOOKKEEPING = frozenset(
    {
        ATTEMPT_HEADER,
        DEAD_LETTER_REASON,
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def copy_of(
    message: AbstractIncomingMessage, headers: Mapping[str, Any], *, reply_to: bool
) -> aio_pika.Message:
    """A persistent copy of a delivered message, to publish again: its body and properties
    (its reply-to address only if ``reply_to``), its headers but the delivery bookkeeping,
    where it was first published (a retry arrives through the default exchange: what a dead
    letter records, for an operator to replay it there), and ``headers``."""
    carried = {k: v for k, v in (message.headers or {}).items() if k not in _BOOKKEEPING}
    return envelope(
        message.body,
        persistent=True,
        headers={**carried, **_first_route(message), **headers},
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to if reply_to else None,
        message_type=message.type,
    )


def _first_route(message: AbstractIncomingMessage) -> dict[str, str]:
    headers = message.headers or {}
    exchange, routing_key = headers.get(ORIGINAL_EXCHANGE), headers.get(ORIGINAL_ROUTING_KEY)
    if isinstance(exchange, str) and isinstance(routing_key, str):
        return {ORIGINAL_EXCHANGE: exchange, ORIGINAL_ROUTING_KEY: routing_key}
    return {
        ORIGINAL_EXCHANGE: message.exchange or "",
        ORIGINAL_ROUTING_KEY: message.routing_key or "",
    }


def encode(
    message: Message,
    *,
    persistent: bool,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_type: str | None = None,
) -> aio_pika.Message:
    """A message model as a JSON AMQP message, with its own message id."""
    return envelope(
        message.to_body(),
        persistent=persistent,
        message_id=message.message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        message_type=message_type,
    )
