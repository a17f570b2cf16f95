"""Engine creation for SQLite and PostgreSQL, and the start-up check that the schema is ready.

SQLite needs three things to be safe with several processes writing one file: WAL (readers do
not block the writer), a busy timeout (wait for the lock instead of failing), and ``BEGIN
IMMEDIATE`` (take the write lock when the transaction starts, so two deductions can never both
read the old balance). pysqlite's own transaction handling gets in the way of the last one, so
it is switched off and we emit ``BEGIN`` ourselves, as SQLAlchemy's SQLite docs recommend.
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, TypeVar

import asyncpg.exceptions as driver  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InvalidatePoolError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.log import InstanceLogger
from sqlalchemy.pool import ConnectionPoolEntry

from store.revisions import schema_problem
from store.settings import StoreSettings

SQLITE_BUSY_TIMEOUT_MS = 10_000
BEGIN_OPTION = "sqlite_begin"
# The engine's execution option that carries DATABASE_TRANSACTION_TIMEOUT to store.transactions.
TIMEOUT_OPTION = "transaction_timeout"
# Names the PostgreSQL pools' logger: sqlalchemy.pool.impl.AsyncAdaptedQueuePool.store
POOL_LOGGING_NAME = "store"
# A pooled PostgreSQL connection idle this long is pinged before use (ping_when_in_doubt).
PING_AFTER_IDLE_S = 1.0
# Seconds such a ping may take before the connection is deemed silent (at most half the
# transaction timeout).
PING_TIMEOUT_S = 1.0
_CHECKED_IN = "checked_in_at"
E = TypeVar("E", Engine, AsyncEngine)

log = logging.getLogger(__name__)


def create_engine(settings: StoreSettings) -> AsyncEngine:
    url = settings.database_url.get_secret_value()
    if url.startswith("sqlite"):
        _ensure_parent_dir(url)
        engine = create_async_engine(url, **sqlite_options())
        make_sqlite_transactional(engine.sync_engine)
        return engine
    connect_args: dict[str, Any] = {}
    if settings.database_schema:
        connect_args["server_settings"] = {"search_path": settings.database_schema}
    timeout = settings.database_transaction_timeout
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=0,
        # asyncpg's own bound on opening a connection (60 s by default), for the start-up
        # check and the outage probe, which do not go through store.transactions.
        connect_args={**connect_args, "timeout": timeout},
        hide_parameters=True,
        execution_options={TIMEOUT_OPTION: timeout},
        pool_logging_name=POOL_LOGGING_NAME,  # a logger of its own, for the filter below
    )
    ping_when_in_doubt(engine.sync_engine, within=min(PING_TIMEOUT_S, timeout / 2))
    pool_logger = engine.pool.logger  # an InstanceLogger with echo_pool
    (pool_logger.logger if isinstance(pool_logger, InstanceLogger) else pool_logger).addFilter(
        _CUT_SHORT_IS_OURS
    )
    return engine


class _CutShortIsOurs(logging.Filter):
    """SQLAlchemy's pool logs an ERROR with a traceback for a close or reset of a connection
    that a cancellation cut short, then raises the cancellation on. Ours are on purpose: a
    transaction past its timeout, and :func:`dispose` giving up on a silent server; each logs
    one WARNING of its own. So the pool's record is a DEBUG line, without the traceback, shown
    only where the pool's logger shows DEBUG. Only on this project's PostgreSQL engines' pools
    (``pool_logging_name``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError)):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_CUT_SHORT_IS_OURS = _CutShortIsOurs()


def sqlite_options() -> dict[str, Any]:
    """Every SQLite engine's options: the async one and its synchronous twin
    (:mod:`store.transactions`) alike."""
    return {
        "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # Errors must not carry statement parameters (usernames) into spans and logs.
        "hide_parameters": True,
    }


def _ensure_parent_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def make_sqlite_transactional(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # On the DBAPI cursor, not through conn.exec_driver_sql: that was a whole SQLAlchemy
        # execution per transaction for a statement with no parameters and no result. The
        # instrumentation sees only SQLAlchemy's executions, so BEGIN still makes no span.
        statement = f"BEGIN {conn.get_execution_options().get(BEGIN_OPTION, 'DEFERRED')}"
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        except conn.dialect.loaded_dbapi.Error as exc:
            # SQLAlchemy wraps what its own executions raise, not what an event handler does:
            # "database is locked" past the busy timeout is then an OperationalError as well.
            raise DBAPIError.instance(
                statement, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from exc
        finally:
            cursor.close()


def ping_when_in_doubt(
    engine: Engine, after_s: float = PING_AFTER_IDLE_S, within: float = PING_TIMEOUT_S
) -> None:
    """Ping a pooled connection at checkout when it has sat idle for ``after_s`` or more, or
    when a connection of this pool was lost or abandoned since it came back; a dead one (the
    server restarted, or closed it) is replaced, with the rest of the pool, before the caller
    sees it, and so is a silent one (no answer within ``within``), on its own.

    SQLAlchemy's ``pool_pre_ping`` does this at every checkout: a round trip per transaction
    (on PostgreSQL about a quarter of the client CPU of a reservation's transaction). A
    connection back from use moments ago has just answered; one that has waited is the one a
    restart may have left dead. Under steady load nothing is pinged; a server that dies under
    load fails the transactions in flight either way. After that, the first lost connection
    puts every connection that came back before it in doubt: SQLAlchemy's own execution path
    would invalidate the whole pool there, but the hot statements run on the driver's cursor
    (:mod:`store.driver`), which invalidates only its own connection (the pool's ``invalidate``
    event tells us). Without this, each dead connection would fail one transaction in turn.

    A connection abandoned half-way through a statement (:mod:`store.transactions`' timeout)
    puts the others in doubt too: after a fail-over, or behind a firewall that forgets idle
    connections, every pooled connection may be silent, and each would cost one transaction
    its whole timeout, or the worker's outage probe its whole bound. The ping's own short
    bound finds them instead, and a silent one is closed at once (a graceful close would wait
    up to 2 s more on the same silent server) and replaced by a new connection."""
    lost_at = [float("-inf")]
    puts_in_doubt = (engine.dialect.loaded_dbapi.Error, DisconnectionError, asyncio.CancelledError)

    @event.listens_for(engine, "invalidate")
    def on_invalidate(_: Any, __: ConnectionPoolEntry, exception: BaseException | None) -> None:
        if isinstance(exception, puts_in_doubt):
            lost_at[0] = time.monotonic()

    @event.listens_for(engine, "handle_error")
    def only_this_connection(context: ExceptionContext) -> None:
        # SQLAlchemy's own path would recycle every older connection on a disconnect, each
        # with a graceful close that waits up to 2 s on a silent server; the doubt above
        # pings them instead, and the first dead one still recycles the pool (below).
        context.invalidate_pool_on_disconnect = False

    @event.listens_for(engine, "checkin")
    def on_checkin(_: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is None:
            return  # a new connection
        if time.monotonic() - checked_in < after_s and checked_in > lost_at[0]:
            return  # in use moments ago, and nothing was lost since
        dialect = engine.dialect
        try:
            if dialect.driver == "asyncpg":
                dbapi_connection.run_async(
                    lambda driver: driver.fetchval("SELECT 1", timeout=within)
                )
            else:
                dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError() from exc  # the pool reconnects and tries again
            raise
        except TimeoutError as exc:  # silent: only this one is replaced, the others are pinged
            dbapi_connection.driver_connection.terminate()
            raise DisconnectionError("no answer to a ping") from exc
        except DEAD_CONNECTION_ERRORS as exc:  # asyncpg's own, called directly
            raise InvalidatePoolError() from exc


def transaction_timeout(engine: AsyncEngine) -> float | None:
    """The engine's DATABASE_TRANSACTION_TIMEOUT; None for SQLite (and an engine made
    elsewhere)."""
    timeout: float | None = engine.get_execution_options().get(TIMEOUT_OPTION)
    return timeout


def for_writes(engine: E) -> E:
    """The same pool, but SQLite transactions take the write lock at BEGIN (no-op elsewhere)."""
    return engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})


class DatabaseUnreachable(ConnectionError):
    """The database could not be reached at start-up."""


class DatabaseUnavailable(ConnectionError):
    """A transaction found the database unreachable: it refused the connection, is shutting
    down, or the connection broke under it (what the driver raises unwrapped); or it did not
    answer within the transaction timeout (:mod:`store.transactions`)."""


class DatabaseFileGone(DatabaseUnavailable):
    """The SQLite file was deleted under the running service: a write there would go to the
    deleted file, and be lost (:class:`store.transactions.ThreadedTransactions`)."""


class SchemaNotReady(RuntimeError):
    """The database is reachable, but ``store.migrate`` has not brought it to this code's schema."""


async def open_engine(settings: StoreSettings) -> AsyncEngine:
    """Engine ready for use, on a migrated schema. Services never create tables: a database
    that is not migrated raises SchemaNotReady. The composition root instruments it
    (:func:`messaging.telemetry.db_spans.instrument_engine`)."""
    engine = create_engine(settings)
    try:
        await _require_ready(engine, settings)
    except BaseException:
        await dispose(engine)
        raise
    return engine


async def check_ready(settings: StoreSettings) -> None:
    """The start-up check alone, on a short-lived engine of its own: DatabaseUnreachable or
    SchemaNotReady (one line each) unless the database is reachable and migrated."""
    engine = create_engine(settings)
    try:
        await _require_ready(engine, settings)
    finally:
        await dispose(engine)


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's pooled connections, giving up after its transaction timeout: closing
    a PostgreSQL connection waits for the server to see it closed, and a server that hangs
    never does (a stop would then wait for ever). What is left open closes with the process."""
    try:
        async with asyncio.timeout(transaction_timeout(engine)):
            await engine.dispose()
    except TimeoutError:
        log.warning("the database did not answer; its connections were left to close on exit")


# What connecting can raise unwrapped: the network's errors, and what asyncpg raises while it
# connects (a database or role that does not exist, a password, a server shutting down).
UNWRAPPED_CONNECT_ERRORS = (OSError, driver.PostgresError, driver.InterfaceError)
# And with SQLAlchemy's wrapped errors.
CONNECT_ERRORS = (DBAPIError, *UNWRAPPED_CONNECT_ERRORS)
# What asyncpg raises, called directly (the in-doubt ping), for a connection that is gone:
# closed, reset, the server shutting down; or used after the server's FATAL arrived (its
# backend terminated, the server restarting) and before its EOF did: InternalClientError,
# "cannot switch to state 11; another operation (2) is in progress". SQLAlchemy translates
# that one to an InternalError (store.availability.database_gone), but the ping bypasses
# SQLAlchemy: a fault campaign had 500s from it after pg_terminate_backend and restarts.
DEAD_CONNECTION_ERRORS = (
    OSError,
    driver.InterfaceError,
    driver.PostgresConnectionError,
    driver.OperatorInterventionError,
    driver.InternalClientError,
)


def failure(exc: BaseException) -> str:
    """The error's class and the first line of the driver's own message (which names no
    password): 'InvalidCatalogNameError: database "x" does not exist', say."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {reason[0] if reason else 'no detail'}"


async def _require_ready(engine: AsyncEngine, settings: StoreSettings) -> None:
    where = make_url(settings.database_url.get_secret_value()).render_as_string(hide_password=True)
    within = transaction_timeout(engine)  # None on SQLite: its busy timeout bounds a lock
    problem, held = None, False
    try:
        async with engine.connect() as conn:  # asyncpg's connect timeout bounds the connection
            # The check reads the schema and alembic_version: a session holding a lock on them
            # (a migration under way, an operator's LOCK TABLE) held the service silent for as
            # long (a review's 40 s lock; a lock never released, for ever).
            try:
                async with asyncio.timeout(within):
                    problem = await conn.run_sync(schema_problem, settings.database_schema)
            except TimeoutError:
                held = True
    except CONNECT_ERRORS as exc:  # a connect timeout among them: a TimeoutError is an OSError
        raise DatabaseUnreachable(
            f"The database at {where} could not be reached or set up ({failure(exc)}). "
            "Check DATABASE_URL and that the server is up."
        ) from None
    if held:
        raise DatabaseUnreachable(
            f"The database at {where} did not answer the start-up check within {within or 0:g} "
            "s (DATABASE_TRANSACTION_TIMEOUT): another session may hold a lock on its tables "
            "(a migration under way?), or the server hangs. Start the service again once it "
            "answers."
        )
    if problem is not None:
        raise SchemaNotReady(f"The database at {where} is not ready: {problem}.")
