"""``python -m bench.twin.fulfilment``: the twin's fulfilment worker.

Per ``reservation.confirmed``: one transaction that records a download token once (a
redelivered event keeps the first), then the ack. One log line.
"""

import logging
import secrets

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bench.twin import amqp, contracts
from bench.twin.ledger import Ledger
from bench.twin.tracing import Tracing, current_trace_id
from bench.twin.worker import Handler, run
from messaging import topology

SERVICE_NAME = "twin-fulfilment"
log = logging.getLogger("bench.twin.fulfilment")


def make_handler(
    ledger: Ledger, tracing: Tracing, _: AbstractChannel, declared: topology.Declared
) -> Handler:
    dlx = declared.exchanges[topology.DEAD_LETTER_EXCHANGE.name]
    db_attributes = {"db.system.name": ledger.kind, "db.operation.name": "prepare_download"}

    async def handle(message: AbstractIncomingMessage) -> None:
        """Handle one ``reservation.confirmed`` delivery."""
        rid = await amqp.parsed(dlx, message, contracts.parse_confirmed)
        if rid is None:
            return
        try:
            with tracing.span("prepare download", db_attributes, SpanKind.CLIENT):
                await ledger.prepare_download(rid, secrets.token_urlsafe(24))
        except Exception as exc:
            await amqp.failed(dlx, message, exc)
            return
        await message.ack()
        if tracing.enabled:
            trace.get_current_span().set_attributes(
                {"reservation.id": rid, "reservation.outcome": "fulfilled"}
            )
        log.info("download ready %s trace_id=%s", rid, current_trace_id())

    return handle


if __name__ == "__main__":
    run(SERVICE_NAME, topology.FULFILMENT, make_handler)
