"""What every worker process does around its handler: the composition root of a worker.

Start-up: logs, tracer provider, broker connection, topology, database. Then consume one queue
with manual acks until SIGTERM or SIGINT. Shutdown is graceful and bounded: stop consuming,
let the messages in flight finish (and ack), close the broker and the database, flush spans.
Messages that were prefetched but not started go back to the queue when the channel closes.
"""

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from messaging import instrumentation, topology
from messaging.connection import BrokerUnreachable, TopologyConflict, connect, open_channel
from messaging.logs import configure_logging
from messaging.settings import BrokerSettings
from messaging.startup import report_startup_failure
from messaging.telemetry import setup_telemetry
from store.engine import DatabaseUnreachable, open_engine
from store.repository import SqlStore
from store.settings import StoreSettings
from workers import faults

log = structlog.get_logger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # Seconds a worker waits for in-flight messages on SIGTERM before closing anyway.
    worker_shutdown_timeout: float = Field(default=10.0, gt=0)
    # Test-only: see workers.faults.
    worker_crash_at: faults.CrashPoint | None = None


@dataclass(frozen=True)
class WorkerRuntime:
    """What a worker's handler may use; built once in :func:`running`."""

    channel: AbstractChannel
    declared: topology.Declared
    store: SqlStore


@asynccontextmanager
async def running(service_name: str) -> AsyncIterator[WorkerRuntime]:
    configure_logging(service_name)
    telemetry = setup_telemetry(service_name)
    broker = BrokerSettings()
    faults.arm(WorkerSettings().worker_crash_at)
    engine = await open_engine(StoreSettings(), telemetry.provider)
    connection = None
    try:
        connection = await connect(broker)
        channel, declared = await open_channel(connection, broker.amqp_prefetch)
        store = SqlStore(engine, before_commit=lambda: faults.crash_point("mid_transaction"))
        yield WorkerRuntime(channel, declared, store)
    finally:
        if connection is not None:
            await connection.close()
        await engine.dispose()
        telemetry.shutdown()
        log.info("stopped")


async def consume_until_stopped(
    runtime: WorkerRuntime,
    queue: topology.QueueSpec,
    handler: Handler,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume ``queue`` with ``handler`` until SIGTERM/SIGINT (or ``stop``, in tests)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    in_flight = _InFlight()
    amqp_queue = runtime.declared.queues[queue.name]
    tag = await amqp_queue.consume(
        instrumentation.consumer(queue.name, in_flight.track(handler)), no_ack=False
    )
    log.info("consuming", queue=queue.name)
    await stop.wait()
    log.info("stopping: no new messages, finishing those in flight", in_flight=in_flight.count)
    await amqp_queue.cancel(tag)
    timeout = WorkerSettings().worker_shutdown_timeout
    if not await in_flight.drained(timeout):
        log.warning("shutdown timeout: unfinished messages will be redelivered", timeout=timeout)


class _InFlight:
    """Counts handlers that are running, so shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, handler: Handler) -> Handler:
        async def tracked(message: AbstractIncomingMessage) -> None:
            self.count += 1
            self._idle.clear()
            try:
                await handler(message)
            finally:
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

        return tracked

    async def drained(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a worker's async main on uvloop where available. A broker or database that cannot
    be reached or set up at start-up ends the process with its one clear line and exit code 1."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main())
    except (BrokerUnreachable, TopologyConflict, DatabaseUnreachable) as exc:
        report_startup_failure(exc)
        sys.exit(1)
