"""Engine creation and schema set-up for SQLite and PostgreSQL.

SQLite needs three things to be safe with several processes writing one file: WAL (readers do
not block the writer), a busy timeout (wait for the lock instead of failing), and ``BEGIN
IMMEDIATE`` (take the write lock when the transaction starts, so two deductions can never both
read the old balance). pysqlite's own transaction handling gets in the way of the last one, so
it is switched off and we emit ``BEGIN`` ourselves, as SQLAlchemy's SQLite docs recommend.
"""

from pathlib import Path
from typing import Any

from opentelemetry.trace import TracerProvider
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from store.seed import load_seed, seed
from store.settings import StoreSettings
from store.tables import metadata
from store.tracing import instrument_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
BEGIN_OPTION = "sqlite_begin"


def create_engine(settings: StoreSettings) -> AsyncEngine:
    url = settings.database_url.get_secret_value()
    if url.startswith("sqlite"):
        _ensure_parent_dir(url)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # Errors must not carry statement parameters (usernames) into spans and logs.
            hide_parameters=True,
        )
        _make_sqlite_transactional(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if settings.database_schema:
        connect_args["server_settings"] = {"search_path": settings.database_schema}
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
        hide_parameters=True,
    )


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables. Several processes may start at once; PostgreSQL can then fail
    one concurrent CREATE TABLE with a duplicate-type error, so a failure is retried."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(5),
        wait=wait_random(0.05, 0.3),
        retry=retry_if_exception_type(DBAPIError),
        reraise=True,
    ):
        with attempt:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)


def _ensure_parent_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _make_sqlite_transactional(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(BEGIN_OPTION, 'DEFERRED')}")


def for_writes(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, but SQLite transactions take the write lock at BEGIN (no-op elsewhere)."""
    return engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})


class DatabaseUnreachable(ConnectionError):
    """The database could not be reached or set up at start-up."""


async def open_engine(settings: StoreSettings, tracer_provider: TracerProvider) -> AsyncEngine:
    """Engine ready for use: instrumented (one span per statement), schema created, seeded."""
    engine = create_engine(settings)
    instrument_engine(engine, tracer_provider)
    try:
        await create_schema(engine)
        await seed(engine, load_seed(settings.seed_file))
    except (OSError, DBAPIError) as exc:
        await engine.dispose()
        url = make_url(settings.database_url.get_secret_value())
        raise DatabaseUnreachable(
            f"The database at {url.render_as_string(hide_password=True)} could not be reached "
            f"or set up ({type(exc).__name__}). Check DATABASE_URL and that the server is up."
        ) from None
    except BaseException:
        await engine.dispose()
        raise
    return engine
