"""The one place an AMQP message is built.

Every message this project sends is JSON with a ``headers`` table, so the instrumentation can
inject ``traceparent`` into it. Work that must survive a broker restart is persistent; a reply
is not (direct reply-to is at-most-once anyway).
"""

from collections.abc import Mapping
from typing import Any

import aio_pika

from messaging.messages import CONTENT_TYPE, Message


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
