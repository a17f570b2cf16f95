"""One delivery, handled the same way by every subscriber: validate, handle, publish what the
handler produced, then ack, or give up.

- A poison message (wrong content type, too big, bad JSON, wrong schema, unknown version) would
  fail the same way every time: it is dead-lettered at once with its reason, never requeued.
- A handler exception is a real failure: it is recorded on the CONSUMER span (exception event,
  ``error.type``, ERROR status; unless a connection drop ended the span first) and, after a
  short back-off (a database blip should not use up every attempt at once), the message is
  retried: published again as its next attempt
  (:mod:`messaging.retry`, which says why the worker counts, not RabbitMQ). On the
  ``MAX_ATTEMPTS``-th failure the worker dead-letters it itself, with the error as the reason,
  so the dead-letter publish is a span in the same trace. A
  :class:`~messaging.handlers.NotAnAttempt` (a failure that was not the message's: its
  database stayed unreachable, or the broker kept refusing its event) is retried as the same
  attempt, however often. The queue's ``x-delivery-limit``
  stays as a backstop for a message that kills the worker before it can count, but a copy
  it would soon dead-letter for being given back (dropped connections, stopped workers) is
  published afresh before it is handled (:mod:`messaging.retry`).
- Otherwise the message is acked, after everything it caused is committed and published
  (the reply and the events, with publisher confirms).
"""

import asyncio
import contextlib
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from messaging import metered
from messaging.dead_letter import dead_letter
from messaging.handlers import Handler, M, NotAnAttempt
from messaging.messages import CONTENT_TYPE, InvalidMessage, is_json
from messaging.publisher import CHANNEL_GONE, Publisher, ReplyAddress
from messaging.retry import RENEW_AFTER_RETURNS, RETURNS_LIMIT, attempt_of, retry, returns_of

log = structlog.get_logger(__name__)

# Our messages are ~200 bytes; anything far larger is not one of ours.
MAX_BODY_BYTES = 16 * 1024
# Handler failures before a message is dead-lettered (counted by messaging.retry).
MAX_ATTEMPTS = 3
# Seconds before the first retry; doubled for each later one.
RETRY_BACKOFF = 0.2
# Characters of the error's message a dead letter's reason carries.
REASON_DETAIL = 200


@dataclass(frozen=True)
class Delivery:
    """What a handler may want to know about the delivery it is handling."""

    redelivered: bool
    attempt: int


_OUTSIDE_A_DELIVERY = Delivery(redelivered=False, attempt=1)
_current: ContextVar[Delivery] = ContextVar("delivery", default=_OUTSIDE_A_DELIVERY)


def current_delivery() -> Delivery:
    """The delivery being handled in this task (each delivery runs in its own task)."""
    return _current.get()


def parse(message: AbstractIncomingMessage, model: type[M]) -> M:
    """Validate a delivery before anything else touches it; InvalidMessage means poison."""
    if not is_json(message.content_type):
        raise InvalidMessage(f"content type {message.content_type!r}, expected {CONTENT_TYPE}")
    if len(message.body) > MAX_BODY_BYTES:
        raise InvalidMessage(f"body of {len(message.body)} bytes exceeds {MAX_BODY_BYTES}")
    return model.from_body(message.body)


async def handle(
    message: AbstractIncomingMessage,
    model: type[M],
    handler: Handler[M],
    *,
    publisher: Publisher,
    dead_letter_exchange: AbstractExchange,
    queue: str,
) -> None:
    token = _current.set(Delivery(bool(message.redelivered), attempt_of(message)))
    try:
        await _handle(message, model, handler, publisher, dead_letter_exchange, queue)
    finally:
        _current.reset(token)


async def _handle(
    message: AbstractIncomingMessage,
    model: type[M],
    handler: Handler[M],
    publisher: Publisher,
    dlx: AbstractExchange,
    queue: str,
) -> None:
    span = trace.get_current_span()
    try:
        payload = parse(message, model)
    except InvalidMessage as exc:
        if span.is_recording():
            span.set_attribute("messaging.dead_letter.reason", str(exc))
        log.warning("poison message dead-lettered", reason=str(exc), queue=queue)
        metered.failed(type(exc).__qualname__)
        reason = f"invalid: {exc}"
        await _dead_letter(message, reason, publisher=publisher, dlx=dlx, queue=queue)
        return
    this_copy, returned = returns_of(message)
    if this_copy >= RENEW_AFTER_RETURNS:
        if returned >= RETURNS_LIMIT:
            log.error("message returned unsettled too often; dead-lettering", returned=returned)
            reason = (
                f"returned to its queue unsettled {returned} times: its workers were cut off, "
                "stopped or killed while holding it"
            )
            await _dead_letter(message, reason, publisher=publisher, dlx=dlx, queue=queue)
            return
        if await _renewed(message, returned, publisher=publisher, queue=queue):
            return
    try:
        handled = await handler(payload)
        if handled is not None:
            await publisher.send(handled, _reply_address(message), wanted=lambda: _open(message))
    except Exception as exc:
        # Not on a span already ended: a connection dropped under the handler ends it with the
        # consumer's task, and the handler, shielded, runs on. The log line below carries it.
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", type(exc).__qualname__)
        metered.failed(type(exc).__qualname__)
        if not _open(message):
            # Its channel closed under the handler (a dropped connection): the broker has it
            # back and redelivers it, so there is nothing to retry, and no handler failure to
            # report (a fault campaign's drop under load logged one per delivery in flight).
            await _give_back(message)
            return
        tries = attempt_of(message)
        counted = not isinstance(exc, NotAnAttempt)
        if counted and tries >= MAX_ATTEMPTS:
            log.exception("handler failed for the last time; dead-lettering", attempt=tries)
            reason = f"handler failed {tries} times: {error_summary(exc)}"
            await _dead_letter(message, reason, publisher=publisher, dlx=dlx, queue=queue)
        else:
            # One line: the CONSUMER span holds the exception with its stack trace, and the last
            # attempt logs it in full. A database outage would otherwise log a traceback for
            # every held message, twice.
            if counted:
                log.warning(
                    "handler failed; the message will be retried", attempt=tries, error=repr(exc)
                )
            else:
                log.warning(
                    "not the message's failure; it will be retried as the same attempt",
                    attempt=tries,
                    error=repr(exc.__cause__ or exc),
                )
            # Back off a little: a database blip should not use up every attempt at once.
            await asyncio.sleep(RETRY_BACKOFF * 2 ** (tries - 1))
            if not await _publishing_ready(publisher, message):
                return
            again = retry(
                publisher.default_exchange,
                message,
                queue=queue,
                meter=publisher.meter,
                counted=counted,
            )
            watched = publisher.refusals.watch(again, f"/{queue}")
            await _settle(watched, message, retrying=True, publisher=publisher)
        return
    await _settle(message.ack(), message)


async def _renewed(
    message: AbstractIncomingMessage, returned: int, *, publisher: Publisher, queue: str
) -> bool:
    """Publish afresh, as the same attempt, a copy the broker would soon dead-letter for coming
    back unsettled (a connection dropped, a worker stopped while holding it), and ack it
    (:mod:`messaging.retry`). True once done, or once the delivery is back with the broker
    (its channel gone). False if it could not be done (the publishing channel not back, the
    copy refused: a full queue, say): the delivery is handled as it is, as it was before
    renewals, which the queue's limit still allows; given back at once, it came straight
    back and was dead-lettered by the broker within milliseconds."""
    log.warning(
        "message returned to its queue unsettled again and again; publishing it afresh, so "
        "that the queue's delivery limit does not dead-letter it",
        returned=returned,
    )
    if not _open(message):
        return True
    if not await publisher.ready():
        log.warning("publishing channel not back in time; handling the message as it is")
        return False
    try:
        await retry(
            publisher.default_exchange, message, queue=queue, meter=publisher.meter, counted=False
        )
    except Exception as exc:  # noqa: BLE001 - optional: refused, channel gone, no confirm in time
        if not _open(message):
            log.warning("channel lost before the message was settled; it will be redelivered")
            return True
        log.warning("could not publish it afresh; handling the message as it is", error=repr(exc))
        return False
    return True


def error_summary(exc: BaseException) -> str:
    """The error's class and the first line of its message, cut at :data:`REASON_DETAIL`
    characters: enough for an operator to tell a revoked permission from a missing table.

    A database error (SQLAlchemy's, carrying the driver's as ``orig``) gives the class of the
    driver's innermost error instead of its message: asyncpg's classes name the SQLSTATE
    (``InsufficientPrivilegeError``, ``UndefinedTableError``), and its messages can quote a
    parameter's value ("invalid input for query argument $1: '…'"). SQLite's one class says
    little, and its messages name tables and columns, never values: they are kept."""
    driver = getattr(exc, "orig", None)
    if isinstance(driver, BaseException):
        innermost = driver
        for _ in range(8):  # a chain is a few links long
            if innermost.__cause__ is None:
                break
            innermost = innermost.__cause__
        if type(innermost).__module__ != "sqlite3":
            return f"{type(exc).__name__}: {type(innermost).__name__}"
        exc = innermost
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) > REASON_DETAIL:
        first = first[: REASON_DETAIL - 1] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _open(message: AbstractIncomingMessage) -> bool:
    """The delivery's channel is open: it can still be acked (a closed one gave it back)."""
    try:
        return not message.channel.is_closed
    except CHANNEL_GONE:
        return False


async def _publishing_ready(publisher: Publisher, message: AbstractIncomingMessage) -> bool:
    """Before a retry copy or a dead letter: wait, bounded, for the publishing channel to be
    back and restored (:meth:`Publisher.ready`). If it is not (or the worker is stopping, or
    the delivery's own channel is gone), the delivery is given back (:func:`_give_back`) and
    this is False: publish nothing then, on a channel that may be mid-restore."""
    if _open(message) and await publisher.ready():
        return True
    await _give_back(message)
    return False


async def _give_back(message: AbstractIncomingMessage) -> None:
    """Back to the queue, untouched: its copy could not be published. A delivery whose own
    channel is gone is back there already (the broker redelivers it)."""
    if not _open(message):
        log.warning("channel lost before the message was settled; it will be redelivered")
        return
    log.warning("publishing channel not back in time; the message goes back to the queue")
    with contextlib.suppress(*CHANNEL_GONE):
        await message.reject(requeue=True)


async def _dead_letter(
    message: AbstractIncomingMessage,
    reason: str,
    *,
    publisher: Publisher,
    dlx: AbstractExchange,
    queue: str,
) -> None:
    """Dead-letter the delivery with ``reason`` once the publishing channel is back, its
    refusals watched, and settle it however that goes (:func:`_settle`)."""
    if not await _publishing_ready(publisher, message):
        return
    dead = dead_letter(dlx, message, reason, queue=queue, meter=publisher.meter)
    await _settle(publisher.refusals.watch(dead, dlx.name), message, publisher=publisher)


def _reply_address(message: AbstractIncomingMessage) -> ReplyAddress | None:
    # Direct reply-to is at-most-once: if the asking API is gone, the reply is dropped and the
    # API's GET /reservations/{id} reads the stored outcome instead.
    if not message.reply_to:
        return None
    return ReplyAddress(message.reply_to, message.correlation_id)


async def _settle(
    settling: Awaitable[Any],
    message: AbstractIncomingMessage,
    *,
    retrying: bool = False,
    publisher: Publisher | None = None,
) -> None:
    """Ack, retry or dead-letter. If the delivery's channel is already gone, the broker
    redelivers the message to a live consumer (the store's idempotency key makes that safe).
    If our own publish fails, the message is never left unacked: a retry's, or any whose
    publishing channel was lost, goes back to the queue (``basic.reject``, requeued), a dead
    letter's to the broker's dead-lettering."""
    try:
        await settling
    except CHANNEL_GONE as exc:
        if not _open(message):
            log.warning(
                "channel lost before the message was settled; it will be redelivered",
                error=type(exc).__name__,
            )
            return
        # The channel lost was the one a worker publishes on (messaging.broker): the delivery
        # is still held here, and nothing else would give it back. Once that channel is back:
        # given back at once, the message came straight back and failed again, past the
        # queue's delivery limit within a second (a fault campaign).
        log.warning(
            "publishing channel lost before the message was settled; requeueing it once the "
            "channel is back",
            error=type(exc).__name__,
        )
        if publisher is not None:
            await publisher.ready()
        with contextlib.suppress(*CHANNEL_GONE):
            await message.reject(requeue=True)
    except Exception:
        if retrying:
            # The copy may be queued already if the ack is what failed: two copies, not none.
            log.exception("could not retry the message; requeueing it")
        else:
            log.exception("could not settle the message; handing it to the broker's dead-lettering")
        with contextlib.suppress(*CHANNEL_GONE):
            await message.reject(requeue=retrying)
