"""What both twin workers do around their handler: set up, consume until SIGTERM, shut down.

Start-up: logging, tracing, the database (tables created and seeded), the broker channel
with the topology declared. Shutdown: stop consuming, let in-flight messages finish (bounded),
then close the broker, the database and the exporter.
"""

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench.twin import amqp
from bench.twin.ledger import Ledger, open_ledger
from bench.twin.settings import from_env
from bench.twin.tracing import Tracing, set_up
from messaging import topology

SHUTDOWN_TIMEOUT_S = 10.0
Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
MakeHandler = Callable[[Ledger, Tracing, AbstractChannel, topology.Declared], Handler]
log = logging.getLogger("bench.twin")


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


async def serve(
    service_name: str,
    queue: topology.QueueSpec,
    make_handler: MakeHandler,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume ``queue`` until SIGTERM/SIGINT (or until the ``stop`` event is set)."""
    settings = from_env()
    tracing = set_up(service_name, settings.traced)
    ledger = await open_ledger(settings)
    connection, channel, declared = await amqp.open_channel(settings.amqp_url, settings.prefetch)
    try:
        stop = stop or _on_signals()
        in_flight: set[asyncio.Task[None]] = set()
        handler = make_handler(ledger, tracing, channel, declared)

        async def tracked(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            in_flight.add(task)
            try:
                await handler(message)
            finally:
                in_flight.discard(task)

        amqp_queue = declared.queues[queue.name]
        tag = await amqp_queue.consume(tracked, no_ack=False)
        log.info("consuming %s", queue.name)
        await stop.wait()
        await amqp_queue.cancel(tag)
        if in_flight:
            await asyncio.wait(in_flight, timeout=SHUTDOWN_TIMEOUT_S)
    finally:
        await connection.close()
        await ledger.close()
        tracing.shutdown()
        log.info("stopped")


def _on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(service_name: str, queue: topology.QueueSpec, make_handler: MakeHandler) -> None:
    configure_logging()
    uvloop.run(serve(service_name, queue, make_handler))
