"""The one place an AMQP message is built.

Every message this project sends is JSON with a ``headers`` table, so the instrumentation can
inject ``traceparent`` into it. Work that must survive a broker restart is persistent; a reply
is not (direct reply-to is at-most-once anyway).

What a delivery carries can be sent again, whatever a publisher put in it: a property that
:mod:`messaging.lenient_decoding` read with U+FFFD for bad bytes can outgrow the 255 bytes of
an AMQP short string (one byte became three), and a header value pamqp could not decode as
text (or a table nested too deep) is ``bytes``, which pamqp does not encode. A property is cut
to 255 bytes, and ``bytes`` go out as a byte array, so a copy (a retry, a dead letter) or a
reply never fails to encode.
"""

from collections.abc import Mapping
from typing import Any, TypeGuard

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from messaging.messages import CONTENT_TYPE, Message
from messaging.topology import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    RETURNED_HEADER,
)

# An AMQP short string (a property) holds at most this many bytes of UTF-8.
SHORT_STRING_BYTES = 255


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
        content_type=_short_string(content_type),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else None,
        message_id=_short_string(message_id),
        correlation_id=_short_string(correlation_id),
        reply_to=_short_string(reply_to),
        type=_short_string(message_type),
    )


def _short_string(text: str | None) -> str | None:
    """``text``, cut to what a short string holds, on a character boundary."""
    if text is None or len(text) <= SHORT_STRING_BYTES // 4:  # at most 4 bytes a character
        return text
    encoded = text.encode()
    if len(encoded) <= SHORT_STRING_BYTES:
        return text
    return encoded[:SHORT_STRING_BYTES].decode(errors="ignore")


def _short(value: object) -> TypeGuard[str]:
    """A string an AMQP short string holds (an exchange name, a routing key)."""
    return isinstance(value, str) and _short_string(value) == value


def _encodable(value: Any) -> Any:
    """A header value pamqp can encode: ``bytes`` (in tables and arrays too) as a bytearray."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value


# What the broker adds to a delivery about its deliveries, the worker's attempt count and a
# dead letter's reason: a copy the worker republishes (messaging.retry, messaging.dead_letter)
# starts without them.
_BOOKKEEPING = frozenset(
    {
        ATTEMPT_HEADER,
        DEAD_LETTER_REASON,
        RETURNED_HEADER,
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
    carried = {
        k: _encodable(v) for k, v in (message.headers or {}).items() if k not in _BOOKKEEPING
    }
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
    """Where the message was first published: its headers' say, when they name an exchange
    and a routing key AMQP can hold (a dead letter is published with that routing key: one
    over 255 bytes, from any publisher's headers, could not be), else its delivery's."""
    headers = message.headers or {}
    exchange, routing_key = headers.get(ORIGINAL_EXCHANGE), headers.get(ORIGINAL_ROUTING_KEY)
    if _short(exchange) and _short(routing_key):
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
