"""The FastAPI application and its composition root (the lifespan).

Everything with a lifecycle (tracer provider, database engine, broker connection, the
request/reply client) is built when the app starts and closed when it stops, never at import.
``uvicorn api.app:create_app --factory`` or ``python -m api`` runs it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

from api import errors
from api.routes import health, reservations, users
from api.settings import ApiSettings
from api.tracing import TraceIdHeaderMiddleware
from messaging import topology
from messaging.connection import connect
from messaging.logs import configure_logging
from messaging.rpc import RpcClient
from messaging.settings import BrokerSettings
from messaging.telemetry import service_version, setup_telemetry
from store.engine import create_engine, create_schema
from store.repository import SqlStore
from store.seed import load_seed, seed
from store.settings import StoreSettings

SERVICE_NAME = "reservations-api"
log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    configure_logging(SERVICE_NAME)
    telemetry = setup_telemetry(SERVICE_NAME)
    # No per-message ASGI "http receive"/"http send" spans: noise in every trace.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=telemetry.provider, exclude_spans=["receive", "send"]
    )
    # Starlette built its middleware stack before the lifespan ran; rebuild it on the first
    # request so the instrumentation wraps it.
    app.middleware_stack = None
    store_settings = StoreSettings()
    engine = create_engine(store_settings)
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=telemetry.provider
    )
    connection = None
    try:
        await create_schema(engine)
        await seed(engine, load_seed(store_settings.seed_file))
        connection = await connect(BrokerSettings())
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        declared = await topology.declare(channel)
        rpc = RpcClient(
            channel,
            declared.exchanges[topology.RESERVATIONS.name],
            reply_timeout=app.state.settings.reservation_reply_timeout,
        )
        await rpc.start()
        app.state.rpc = rpc
        app.state.store = SqlStore(engine)
        app.state.connection = connection
        log.info("api ready")
        yield
        await rpc.close()
    finally:
        if connection is not None:
            await connection.close()
        await engine.dispose()
        FastAPIInstrumentor.uninstrument_app(app)
        telemetry.shutdown()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    app = FastAPI(
        title="Reservations API",
        version=service_version(),
        summary="Reserve items with credits; one trace follows each request across RabbitMQ.",
        lifespan=lifespan,
    )
    app.state.settings = settings or ApiSettings()
    app.add_middleware(TraceIdHeaderMiddleware)
    errors.install(app)
    for module in (reservations, users, health):
        app.include_router(module.router)
    return app
