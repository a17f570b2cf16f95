"""The hot statements on the driver's cursor (store/driver.py), on real SQLite and PostgreSQL:
the same spans the SQLAlchemy instrumentation makes for them, SQLAlchemy's errors without the
parameters, and typed rows."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import pytest
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain.reservations import Outcome
from messaging.telemetry.db_spans import instrument_engine
from messaging.telemetry.providers import SEMCONV_OPT_IN
from store import statements as sql
from store.availability import database_gone
from store.driver import DriverStatements
from store.engine import PING_AFTER_IDLE_S, open_engine
from store.repository import SqlStore
from store.settings import StoreSettings
from store.transactions import transactions_for

pytestmark = pytest.mark.integration

HOT = ["UPDATE users", "INSERT reservations", "UPDATE reservations"]


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of an engine instrumented as the services instrument theirs: with the stable
    database conventions, which the contrib packages read once per process (reset here)."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", SEMCONV_OPT_IN)
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, "_initialized", False)
    mapping = "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING"
    monkeypatch.setattr(_OpenTelemetrySemanticConventionStability, mapping, {})
    yield InMemorySpanExporter()
    SQLAlchemyInstrumentor().uninstrument()  # instrument_engine instruments once per process


@pytest.fixture
async def engine(store_settings: StoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(store_settings)
    yield engine
    await engine.dispose()


def _record(reservation_id: uuid.UUID, username: str = "alice") -> dict[str, object]:
    return {
        "reservation_id": str(reservation_id),
        "username": username,
        "item_id": "book-1",
        "outcome": "confirmed",
        "price": 10,
        "credits_left": 90,
        "trace_id": None,
    }


def _described(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, str, dict[str, object]]]:
    return [(s.name, s.kind.name, dict(s.attributes or {})) for s in spans]


async def test_hot_statements_make_the_spans_the_instrumentation_makes(
    engine: AsyncEngine, exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = SqlStore(engine, instrument_engine(engine, provider))
    with provider.get_tracer("test").start_as_current_span("process") as process:
        reservation = await store.reserve(uuid.uuid4(), "alice", "book-1")
        assert await store.prepare_download(reservation.reservation_id, "token-1")
    by_driver = [s for s in exporter.get_finished_spans() if s.name != "process"]
    assert [s.name for s in by_driver] == HOT
    parent = process.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent for s in by_driver)
    exporter.clear()

    # The same statements through Connection.execute, where the instrumentation sees them.
    def through_sqlalchemy(conn: Connection) -> None:
        conn.execute(sql.DEDUCT, {"p_username": "alice", "p_item_id": "book-1"})
        conn.execute(sql.RECORD, _record(rid := uuid.uuid4()))
        conn.execute(sql.PREPARE_DOWNLOAD, {"p_id": str(rid), "p_token": "token-2"})

    await transactions_for(engine).write(through_sqlalchemy)
    by_instrumentation = exporter.get_finished_spans()
    assert _described(by_instrumentation) == _described(tuple(by_driver))


async def test_errors_are_sqlalchemys_without_parameters(engine: AsyncEngine) -> None:
    driver, reservation_id = DriverStatements(), uuid.uuid4()
    transactions = transactions_for(engine)
    await transactions.write(lambda conn: driver.execute(conn, sql.RECORD, _record(reservation_id)))
    secret = "carol-the-secret-username"
    with pytest.raises(IntegrityError) as raised:
        await transactions.write(
            lambda conn: driver.execute(conn, sql.RECORD, _record(reservation_id, secret))
        )
    assert secret not in str(raised.value)
    assert "INSERT INTO reservations" in str(raised.value)


async def test_rows_are_typed_as_sqlalchemy_types_them(engine: AsyncEngine) -> None:
    store = SqlStore(engine)
    reservation = await store.reserve(uuid.uuid4(), "alice", "book-1")
    assert (reservation.price, reservation.credits_left) == (10, 90)
    prepared = await store.prepare_download(reservation.reservation_id, "token-1")
    assert prepared is not None and isinstance(prepared.ready_at, datetime)
    stored = await store.get_reservation(reservation.reservation_id)  # through SQLAlchemy
    assert stored == prepared


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_connection_lost_under_a_hot_statement_is_replaced(
    store_settings: StoreSettings, postgres_url: str
) -> None:
    """Killed moments before use (too soon for the idle ping), the one pooled connection fails
    the deduction: the error says it was invalidated, nothing is charged, and the next
    reservation runs on a new connection."""
    engine = await open_engine(store_settings.model_copy(update={"database_pool_size": 1}))
    admin = create_async_engine(postgres_url)
    try:
        transactions, store = transactions_for(engine), SqlStore(engine)
        pid = await transactions.read(lambda conn: conn.scalar(text("SELECT pg_backend_pid()")))
        async with admin.connect() as conn:
            assert await conn.scalar(text(f"SELECT pg_terminate_backend({pid})"))
        with pytest.raises(DBAPIError) as lost:
            await store.reserve(uuid.uuid4(), "alice", "book-1")
        assert lost.value.connection_invalidated
        again = await store.reserve(uuid.uuid4(), "alice", "book-1")
        assert (again.outcome, again.credits_left) == (Outcome.CONFIRMED, 90)
    finally:
        await admin.dispose()
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_after_a_lost_connection_the_rest_of_the_pool_is_checked_before_use(
    store_settings: StoreSettings, postgres_url: str
) -> None:
    """Every pooled connection killed moments after use (too soon for the idle ping): the first
    hot statement fails on one, and the next transactions run on live ones, as after a
    disconnect SQLAlchemy itself sees. (A worker retries each message twice: a pool of dead
    connections failing one by one would dead-letter messages.)"""
    engine = await open_engine(store_settings.model_copy(update={"database_pool_size": 8}))
    admin = create_async_engine(postgres_url)
    try:
        store = SqlStore(engine)
        held = [await engine.connect() for _ in range(8)]
        pids = [await conn.scalar(text("SELECT pg_backend_pid()")) for conn in held]
        for conn in held:
            await conn.close()  # back to the pool, checked in moments ago
        async with admin.connect() as conn:
            for pid in pids:
                assert await conn.scalar(text(f"SELECT pg_terminate_backend({pid})"))
            # pg_terminate_backend only signals: wait until the backends have gone, so every
            # pooled connection is dead before the first reservation, not still finishing.
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"
            for _ in range(100):
                if not await conn.scalar(text(alive), {"pids": pids}):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"backends {pids} still running 5 s after pg_terminate_backend")
        outcomes = []
        for _ in range(8):
            try:
                reservation = await store.reserve(uuid.uuid4(), "alice", "book-1")
                outcomes.append(reservation.outcome.value)
            except DBAPIError as exc:
                assert exc.connection_invalidated
                outcomes.append("lost")
        assert outcomes.count("lost") == 1, outcomes
        assert outcomes[0] == "lost", outcomes
    finally:
        await admin.dispose()
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("call", "idle"),
    [("reserve", 0.0), ("get_credits", 0.0), ("reserve", PING_AFTER_IDLE_S + 0.05)],
    ids=["hot-statement", "sqlalchemy-read", "checkout-ping"],
)
async def test_a_connection_used_as_its_backend_is_terminated_fails_as_the_database_gone(
    store_settings: StoreSettings, postgres_url: str, call: str, idle: float
) -> None:
    """A pooled connection used right after ``pg_terminate_backend``, before its EOF arrives,
    makes asyncpg raise its InternalClientError ("cannot switch to state 11"). SQLAlchemy
    translates it to an InternalError for a statement (the hot statements' cursor, a read),
    but the checkout ping calls asyncpg directly (a connection idle for
    ``PING_AFTER_IDLE_S``), and there it came untranslated: a 500 in the API, a handler
    failure in a worker (a fault campaign's pg_terminate_backend under load: ten 500s in
    2,000 requests, none after the fix; here the race seldom goes that way). The ping must
    replace such a connection before the caller sees it; a statement that finds it must fail
    as the database gone; and the next call must get a live connection. The race goes either
    way, so each case runs a few times, each a few loop turns later than the last."""
    engine = await open_engine(store_settings.model_copy(update={"database_pool_size": 1}))
    admin = create_async_engine(postgres_url)
    store = SqlStore(engine)

    async def use() -> object:
        if call == "reserve":
            return await store.reserve(uuid.uuid4(), "alice", "book-1")
        return await store.get_credits("alice")

    failures: list[str] = []
    try:
        async with admin.connect() as kill:
            for turn in range(8 if idle else 16):
                await use()
                async with engine.connect() as conn:  # the pool's one connection
                    pid = await conn.scalar(text("SELECT pg_backend_pid()"))
                await asyncio.sleep(idle)
                await kill.scalar(text(f"SELECT pg_terminate_backend({pid})"))
                for _ in range(turn % 4):
                    await asyncio.sleep(0)
                try:
                    await use()
                except Exception as exc:
                    assert database_gone(exc), repr(exc)
                    failures.append(repr(exc)[:60])
                await use()  # on a new connection
        if idle:  # the ping found it, and the pool connected again before the caller saw it
            assert not failures, failures
        else:  # the statement found it
            assert failures, "the backend was never found terminated: the test proved nothing"
    finally:
        await admin.dispose()
        await engine.dispose()
