"""``python -m bench.twin.credit_check``: the twin's credit-check worker.

Per delivery: parse, one transaction (deduct and record, idempotent by reservation id), then
the reply (direct reply-to) and, when confirmed, the persistent ``reservation.confirmed``
event, published together and both confirmed by the broker before the ack. One log line.
"""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bench.twin import amqp, contracts, schema
from bench.twin.ledger import Ledger
from bench.twin.tracing import Tracing, current_trace_id
from bench.twin.worker import Handler, run
from messaging import topology

SERVICE_NAME = "twin-credit-check"
log = logging.getLogger("bench.twin.credit_check")


def make_handler(
    ledger: Ledger, tracing: Tracing, channel: AbstractChannel, declared: topology.Declared
) -> Handler:
    events = declared.exchanges[topology.RESERVATIONS.name]
    dlx = declared.exchanges[topology.DEAD_LETTER_EXCHANGE.name]
    replies = channel.default_exchange
    db_attributes = {"db.system.name": ledger.kind, "db.operation.name": "reserve"}

    async def handle(message: AbstractIncomingMessage) -> None:
        """Handle one ``reservation.requested`` delivery."""
        request = await amqp.parsed(dlx, message, contracts.parse_requested)
        if request is None:
            return
        rid, username, item_id = request
        try:
            with tracing.span("reserve credits", db_attributes, SpanKind.CLIENT):
                decision = await ledger.reserve(rid, username, item_id)
            publishing: list[Awaitable[Any]] = []
            if message.reply_to:
                body = contracts.credit_checked(rid, decision)
                publishing.append(
                    replies.publish(
                        amqp.reply(body, rid, message.correlation_id),
                        message.reply_to,
                        mandatory=False,
                    )
                )
            if decision.outcome == schema.CONFIRMED and decision.price is not None:
                event = contracts.reservation_confirmed(rid, username, item_id, decision.price)
                publishing.append(
                    events.publish(
                        amqp.persistent(event, rid),
                        topology.RESERVATION_CONFIRMED,
                        mandatory=True,
                    )
                )
            await asyncio.gather(*publishing)
        except Exception as exc:
            await amqp.failed(dlx, message, exc)
            return
        await message.ack()
        if tracing.enabled:
            _annotate(rid, item_id, decision.outcome, decision.replayed)
        log.info(
            "credit checked %s %s credits_left=%s replayed=%s trace_id=%s",
            rid,
            decision.outcome,
            decision.credits_left,
            decision.replayed,
            current_trace_id(),
        )

    return handle


def _annotate(rid: str, item_id: str, outcome: str, replayed: bool) -> None:
    trace.get_current_span().set_attributes(
        {
            "reservation.id": rid,
            "reservation.outcome": outcome,
            "reservation.replayed": replayed,
            "reservation.item_id": item_id,
        }
    )


if __name__ == "__main__":
    run(SERVICE_NAME, topology.CREDIT_CHECK, make_handler)
