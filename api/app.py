"""The FastAPI application and its composition root (the lifespan).

Everything with a lifecycle (tracer provider, database engine, broker connection, the
request/reply client) is built when the app starts and closed when it stops, never at import.
``python -m api`` runs it (``uvicorn api.app:create_app --factory`` too, without what
``api/http_protocol.py`` adds: the bound on a request's head and the 503 for a request that the
shutdown cuts short; without the exit when the broker channel is lost for good; and with
uvicorn's own graceful timeout, not ``API_SHUTDOWN_TIMEOUT``).
"""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import structlog
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy.ext.asyncio import AsyncEngine

from api import errors
from api.edge import link_incoming, wrap_outermost
from api.limits import RequestLimitsMiddleware
from api.routes import downloads, health, reservations, users
from api.settings import ApiSettings
from api.tracing import TraceIdHeaderMiddleware
from messaging.broker import Broker
from messaging.connection import connect, is_up
from messaging.metrics import MessagingMetrics
from messaging.settings import BrokerSettings
from messaging.telemetry.db_spans import instrument_engine
from messaging.telemetry.logs import configure_logging
from messaging.telemetry.providers import service_version, setup_telemetry
from service.startup import (
    STARTUP_FAILURES,
    quiet_lifespan_traceback,
    report_startup_failure,
)
from store.engine import dispose, open_engine
from store.repository import SqlStore
from store.settings import StoreSettings

SERVICE_NAME = "reservations-api"
HEALTH_PROBES = r"/healthz\b,/readyz\b"
log = structlog.get_logger(__name__)
# Seconds between looks, while the app starts, at whether the server was asked to stop.
STOP_POLL = 0.1
T = TypeVar("T")
NATIVE_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    configure_logging(SERVICE_NAME)
    quiet_lifespan_traceback((*STARTUP_FAILURES, StoppedStarting))
    telemetry = setup_telemetry(SERVICE_NAME)
    # No per-message ASGI "http receive"/"http send" spans: noise in every trace. No trace
    # per health probe; OTEL_PYTHON_FASTAPI_EXCLUDED_URLS replaces this list when set.
    if telemetry.enabled:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=telemetry.provider,
            meter_provider=telemetry.meter_provider,
            exclude_spans=["receive", "send"],
            server_request_hook=link_incoming,
            excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or HEALTH_PROBES,
        )
    # The edge filter must see trace headers before the instrumentation extracts them.
    app.build_middleware_stack = wrap_outermost(  # type: ignore[method-assign]
        app.build_middleware_stack, app.state.settings.incoming_trace
    )
    # Starlette built its middleware stack before the lifespan ran; rebuild it on the first
    # request so the instrumentation and the edge filter wrap it.
    app.middleware_stack = None
    engine: AsyncEngine | None = None
    connection: AbstractRobustConnection | None = None
    watchdog: asyncio.Future[None] | None = None
    try:
        engine = await _unless_stopping(app, open_engine(StoreSettings()))
        statement_spans = instrument_engine(engine, telemetry.provider)
        connection = await _unless_stopping(app, connect(BrokerSettings()))
        metrics = MessagingMetrics(telemetry.meter_provider, service_version())
        broker = await Broker.open(connection, metrics=metrics)
        rpc = await broker.rpc(reply_timeout=app.state.settings.reservation_reply_timeout)
        app.state.rpc = rpc
        app.state.store = SqlStore(engine, statement_spans)
        app.state.connection = connection
        if app.state.on_broker_lost is not None:
            watchdog = asyncio.ensure_future(_stop_serving_when_lost(app, broker, connection))
            watchdog.add_done_callback(_report_failure)
        log.info("api ready")
        yield
        await rpc.close()
    except STARTUP_FAILURES as exc:
        report_startup_failure(exc)
        raise
    except StoppedStarting:
        app.state.stopped_starting = True
        log.info("asked to stop while starting; stopped before serving")
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        if connection is not None:
            await connection.close()
        if engine is not None:
            await dispose(engine)
        if telemetry.enabled:
            FastAPIInstrumentor.uninstrument_app(app)
        telemetry.shutdown()


class StoppedStarting(Exception):
    """The server was asked to stop (SIGTERM, Ctrl-C) while the app was starting."""


async def _unless_stopping(app: FastAPI, step: Awaitable[T]) -> T:
    """``step``, ended as soon as the server is asked to stop (StoppedStarting). uvicorn
    looks at its signals only once the start-up is done: a broker that did not answer held a
    SIGTERM for the whole ``AMQP_CONNECT_TIMEOUT``, and then the API said it could not
    start."""
    stopping: Callable[[], bool] | None = app.state.stopping
    task = asyncio.ensure_future(step)
    while stopping is not None and not task.done():
        await asyncio.wait({task}, timeout=STOP_POLL)
        if not task.done() and stopping():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise StoppedStarting("asked to stop while starting")
    return await task


async def _stop_serving_when_lost(
    app: FastAPI, broker: Broker, connection: AbstractRobustConnection
) -> None:
    """The channel requests go out on, closed for good with the connection up (aio-pika does
    not reopen a channel whose restore failed: a queue declared again with other arguments,
    say): every POST would answer 503 until a restart (a fault campaign), and ``/readyz``
    says not ready. Say why, and stop serving as SIGTERM does, letting the requests in flight
    finish (``python -m api`` then exits 1), so that a restart names the cause."""
    lost = await broker.publisher.until_lost(lambda: is_up(connection))
    log.error(str(lost))
    app.state.lost = lost
    app.state.on_broker_lost()


def _report_failure(watchdog: "asyncio.Future[None]") -> None:
    """A watchdog that failed would leave the API unwatched, saying nothing."""
    if not watchdog.cancelled() and (error := watchdog.exception()) is not None:
        log.error("the broker channel watchdog failed", error=repr(error))


def create_app(
    settings: ApiSettings | None = None,
    *,
    on_broker_lost: Callable[[], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> FastAPI:
    """The app. ``on_broker_lost`` (``python -m api``: stop the server) is called when the
    broker channel has stayed closed while the connection is up; ``app.state.lost`` says
    why. ``stopping`` (``python -m api``: the server was sent SIGTERM or SIGINT) ends a
    start-up still waiting for the database or the broker; ``app.state.stopped_starting``
    says it did."""
    app = FastAPI(
        title="Reservations API",
        version=service_version(),
        summary="Reserve items with credits; one trace follows each request across RabbitMQ.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry support stays off: the lifespan instruments the app with
        # the composition root's providers (FastAPIInstrumentor, behind the edge trust filter),
        # and FASTAPI_OTEL_AUTO_CONFIGURE must not add a second pipeline beside it.
        telemetry=NATIVE_TELEMETRY_OFF,
        # A path with a slash too many is a 404, not Starlette's 307 to a URL built from the
        # client's Host header (which a proxy in front may not be, and a POST is sent again).
        redirect_slashes=False,
    )
    app.state.settings = settings = settings or ApiSettings()
    app.state.on_broker_lost, app.state.lost = on_broker_lost, None
    app.state.stopping, app.state.stopped_starting = stopping, False
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(TraceIdHeaderMiddleware)
    errors.install(app)
    for module in (reservations, users, downloads, health):
        app.include_router(module.router)
    return app
