"""What every worker process does around its handler: the composition root of a worker.

A worker is a :class:`Worker`: a queue, the message model it takes, and how to build its
handler from the store. :func:`serve` does the rest. Start-up: logs, tracer provider, broker
connection, topology, database. Then it consumes the queue until SIGTERM or SIGINT (or until
its consumer, or the channel it publishes on, is lost for good: then it exits 1, saying so).
Shutdown is graceful and bounded: stop consuming, let the messages in flight finish (and ack),
close the broker and the database, flush spans.
"""

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic

import structlog
from aio_pika.abc import AbstractRobustConnection
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.broker import Broker, PublisherFactory
from messaging.connection import connect, is_up
from messaging.handlers import Handler, M
from messaging.metrics import MessagingMetrics
from messaging.publisher import PUBLISH_HOLD, Publisher, PublishingLost
from messaging.settings import BrokerSettings
from messaging.subscriber import ConsumerLost, Subscription
from messaging.telemetry.db_spans import instrument_engine
from messaging.telemetry.logs import LogSettings, configure_logging
from messaging.telemetry.providers import refused_settings, service_version, setup_telemetry
from messaging.topology import QueueSpec
from service.gc_tuning import tune_for_serving
from service.notify import notify_ready
from service.settings_check import check, settings_checked
from service.startup import STARTUP_FAILURES, report_startup_failure
from store.driver import StatementSpans
from store.engine import dispose, open_engine
from store.repository import SqlStore
from store.settings import StoreSettings
from workers.database_outage import BUSY_PAUSE, HOLD_AT_MOST, DatabaseOutage, held_through

log = structlog.get_logger(__name__)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    # Seconds a worker waits for in-flight messages on SIGTERM before closing anyway.
    worker_shutdown_timeout: float = Field(default=10.0, gt=0)
    # Seconds a failed message is held, at most, while the database does not answer (then it
    # goes back to its queue as the same attempt: at least 1 s, so that an outage does not
    # cycle the messages in flight through the queue several times a second), and at least,
    # from its second attempt on, when it answered but could not do the work (locked, busy,
    # full): workers/database_outage.py. Each is under RabbitMQ's 30 min ack timeout.
    database_outage_hold: float = Field(default=HOLD_AT_MOST, ge=1, le=300)
    # At least a second: a busy failure past the pause is no attempt, so none would loop hot.
    database_busy_pause: float = Field(default=BUSY_PAUSE, ge=1, le=300)
    # Seconds, at most, an event is held and published again while the broker refuses it (a
    # full queue) or its channel is being reopened, before its delivery goes back to its queue
    # as the same attempt (messaging.publisher; at least 1 s, as above); its delivery stays
    # unacked meanwhile.
    publish_hold: float = Field(default=PUBLISH_HOLD, ge=1, le=300)


@dataclass(frozen=True)
class Worker(Generic[M]):
    """One worker: its service name, the queue it consumes, the model it takes, and its
    handler, built from the store port."""

    service_name: str
    queue: QueueSpec
    model: type[M]
    handler: Callable[[SqlStore], Handler[M]]


async def serve(
    worker: Worker[M],
    stop: asyncio.Event | None = None,
    *,
    store: Callable[[AsyncEngine, StatementSpans], SqlStore] = SqlStore,
    publisher: PublisherFactory = Publisher.on,
) -> None:
    """Run ``worker`` until SIGTERM/SIGINT (or ``stop``, in tests), or until its consumer or
    its publishing channel is lost for good (:class:`~messaging.subscriber.ConsumerLost`,
    :class:`~messaging.publisher.PublishingLost`, raised). A start-up failure is
    reported here, in one line, while log records still reach the OTLP exporter; then raised."""
    configure_logging(worker.service_name)
    settings, tuning = BrokerSettings(), WorkerSettings()  # a bad value fails now, not at exit
    telemetry = setup_telemetry(worker.service_name)
    engine: AsyncEngine | None = None
    connection: AbstractRobustConnection | None = None
    started = False
    try:
        engine = await open_engine(StoreSettings())
        statement_spans = instrument_engine(engine, telemetry.provider)
        connection = await connect(settings)
        metrics = MessagingMetrics(telemetry.meter_provider, service_version())
        broker = await Broker.open(
            connection,
            prefetch=settings.amqp_prefetch,
            publisher=publisher,
            metrics=metrics,
            consumes=worker.queue,
        )
        broker.publisher.hold = tuning.publish_hold
        # A database outage holds the failed message until it is over: see database_outage.
        outage = DatabaseOutage(
            engine, tuning.database_outage_hold, busy_pause=tuning.database_busy_pause
        )
        handler = held_through(outage, worker.handler(store(engine, statement_spans)))
        # Before the first delivery (and the "consuming" line that tells the world it started),
        # so a SIGTERM from then on is a graceful stop, never the default kill.
        stop = stop or _stop_on_signals()
        subscription = await broker.subscribe(worker.queue, worker.model, handler)
        started = True
        notify_ready()  # to a supervisor that asked (NOTIFY_SOCKET): systemd, `reservations run`
        lost = await _until_stopped_or_lost(stop, subscription, broker, partial(is_up, connection))
        # What it holds (through a database outage, or an event the broker refuses) goes
        # back to the broker, rather than wait out the shutdown.
        outage.close()
        broker.publisher.release()
        await subscription.stop(tuning.worker_shutdown_timeout)
        if lost is not None:
            log.error(str(lost))
            raise lost
    except STARTUP_FAILURES as exc:
        report_startup_failure(exc)
        raise
    finally:
        if connection is not None:
            await connection.close()
        if engine is not None:
            await dispose(engine)
        telemetry.shutdown()
        if started:
            log.info("stopped")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_stopped_or_lost(
    stop: asyncio.Event, subscription: Subscription, broker: Broker, connected: Callable[[], bool]
) -> ConsumerLost | PublishingLost | None:
    """None once asked to stop; the reason if the consumer, or the channel the worker
    publishes on, was lost first (while ``connected()``: the connection is up)."""
    stopped = asyncio.ensure_future(stop.wait())
    consumer_lost = asyncio.ensure_future(subscription.until_lost(connected))
    publishing_lost = asyncio.ensure_future(broker.publisher.until_lost(connected))
    watched = (stopped, consumer_lost, publishing_lost)
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in watched:
            task.cancel()
        await asyncio.gather(*watched, return_exceptions=True)
    if stopped.done() and not stopped.cancelled():
        stopped.result()  # raises what stopped it, if it failed
        return None
    if consumer_lost.done() and not consumer_lost.cancelled():
        return consumer_lost.result()
    return publishing_lost.result()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a worker's async main on uvloop where available. A broker or database that cannot
    be reached or set up at start-up, or a consumer or publishing channel lost for good later,
    ends the process with exit code 1, after its one clear line (:func:`serve`)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    tune_for_serving()
    try:
        with settings_checked():
            check(LogSettings, BrokerSettings, WorkerSettings, StoreSettings, also=refused_settings)
            runner(main())
    except (*STARTUP_FAILURES, ConsumerLost, PublishingLost):  # reported by serve()
        sys.exit(1)
