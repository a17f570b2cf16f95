"""How a transaction reaches the database: one thread hop per transaction on SQLite.

Through aiosqlite, every DBAPI call (cursor, execute, fetch, close, commit, the rollback on
pool return) is its own hop to aiosqlite's thread and back to the event loop: about a dozen
per reservation, each costing more CPU than the statement itself. So a transaction is written
once, as a plain function of a synchronous SQLAlchemy ``Connection`` (same statements, same
``BEGIN IMMEDIATE``), and run:

- on SQLite, by a synchronous twin of the engine (pysqlite, same file, same pragmas) on a
  thread, in one hop. Writes share one thread per store (a service has one), which queues
  them: one transaction at a time holds the file's write lock, the others wait their turn
  instead of napping in SQLite's busy handler;
- on PostgreSQL, by the asyncpg engine through ``AsyncConnection.run_sync``, without a thread,
  within the engine's ``DATABASE_TRANSACTION_TIMEOUT``: a server that hangs, or a network that
  drops packets, raises no error by itself, and would keep the caller waiting for ever. A
  transaction that runs out of time (checkout included) is cancelled, which closes its
  connection (SQLAlchemy invalidates a connection whose statement was cancelled; so does
  :mod:`store.driver`), and raises DatabaseUnavailable. A COMMIT that timed out may have
  committed, as with a connection lost on it.

The hop copies the caller's context, so the statement spans stay children of the current span. The
twin is made with ``sqlalchemy.create_engine`` looked up when it is called: once the composition
root has instrumented the process's engine (``messaging.telemetry.db_spans.instrument_engine``,
before it makes the store), the SQLAlchemy instrumentation traces every engine created that way,
with the same tracer provider. Disposing the engine disposes its twin (and gives back the connection
the write thread keeps).
"""

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from store import engine as engine_module
from store.engine import (
    UNWRAPPED_CONNECT_ERRORS,
    DatabaseFileGone,
    DatabaseUnavailable,
    failure,
    for_writes,
    make_sqlite_transactional,
    sqlite_options,
    transaction_timeout,
)
from store.failures import opened_read_only, worth_running_again

log = logging.getLogger(__name__)
T = TypeVar("T")
Body = Callable[[Connection], T]
# Runs, at most, of a PostgreSQL transaction that the server rolled back for a reason of the
# moment.
MAX_RUNS = 3
# A SQLite write that waited its turn longer than this gets the rest of the busy timeout only.
SHORTEN_AFTER_MS = 50


class Transactions(Protocol):
    async def write(self, body: Body[T]) -> T:
        """``body`` in a write transaction (``BEGIN IMMEDIATE`` on SQLite), committed."""
        ...

    async def read(self, body: Body[T]) -> T: ...


class AsyncTransactions:
    """The async engine's own path (PostgreSQL): the body runs in SQLAlchemy's greenlet."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = for_writes(engine)
        self._timeout = transaction_timeout(engine)

    async def write(self, body: Body[T]) -> T:
        return await self._within_timeout(self._writer, lambda conn: _in_transaction(conn, body))

    async def read(self, body: Body[T]) -> T:
        return await self._within_timeout(self._engine, body)

    async def _within_timeout(self, engine: AsyncEngine, body: Body[T]) -> T:
        """``body`` within the timeout; run again, up to :data:`MAX_RUNS` times in all and within
        the same deadline, if the server rolled it back for a reason of the moment
        (:func:`store.failures.worth_running_again`): a statement prepared before another
        process changed the schema (asyncpg prepares statements, never ``COMMIT``), a
        deadlock, a serialization failure. Nothing of such a run was committed, and the next
        one prepares its statements afresh."""
        loop = asyncio.get_running_loop()
        deadline = None if self._timeout is None else loop.time() + self._timeout
        runs = 1
        while True:
            try:
                return await self._once(engine, body, deadline)
            except DBAPIError as exc:
                if runs >= MAX_RUNS or not worth_running_again(exc):
                    raise
                runs += 1
                log.warning(
                    "the database rolled the transaction back (%s); "
                    "running it again, within the same deadline",
                    failure(exc),
                )

    async def _once(self, engine: AsyncEngine, body: Body[T], deadline: float | None) -> T:
        try:
            async with asyncio.timeout_at(deadline):
                conn = await _checked_out(engine)
                try:
                    return await conn.run_sync(body)
                finally:
                    await _close(conn)
        except TimeoutError as exc:  # ours: _checked_out wraps the driver's own
            raise DatabaseUnavailable(f"no answer within {self._timeout} s") from exc


async def _close(conn: AsyncConnection) -> None:
    """``conn.close()``, run to its end (the connection back in the pool) even when the caller
    is cancelled, as ``async with`` would. A cancellation during the close (the transaction's
    deadline, most often) first closes the driver's connection under it: the ROLLBACK of what
    is left of a read's transaction, sent to a server gone silent since the read answered,
    would otherwise wait for ever and hold its pool slot. SQLAlchemy then discards that
    connection and gives the slot back. No timer of its own: one per transaction is enough."""
    closing = asyncio.ensure_future(conn.close())
    closing.add_done_callback(_retrieved)
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        _close_under(conn, closing)
        raise


def _retrieved(closing: "asyncio.Future[None]") -> None:
    """A caller cancelled meanwhile no longer awaits the close; its failure (once closed under
    it, say) is not an unretrieved task exception."""
    if not closing.cancelled():
        closing.exception()


def _close_under(conn: AsyncConnection, closing: "asyncio.Future[None]") -> None:
    """Close the driver's connection if ``closing`` still waits on it."""
    sync = conn.sync_connection
    if closing.done() or sync is None or sync.closed or sync.invalidated:
        return  # nothing left to close (and ``sync.connection`` would connect again)
    driver = sync.connection.driver_connection
    if driver is not None:
        log.warning("closing a database connection that did not answer in time")
        driver.terminate()


async def _checked_out(engine: AsyncEngine) -> AsyncConnection:
    """A pooled connection. What connecting raises unwrapped (asyncpg's errors, the network's:
    a server that refuses, or is shutting down) is DatabaseUnavailable; a statement's errors
    come wrapped by SQLAlchemy (DBAPIError), and are the caller's to read."""
    conn = engine.connect()
    try:
        await conn.start()
    except UNWRAPPED_CONNECT_ERRORS as exc:
        raise DatabaseUnavailable(failure(exc)) from exc
    return conn


class ThreadedTransactions:
    """A synchronous engine; each transaction is one call on a thread. Writes run on this
    store's own thread, on a connection that thread keeps from one transaction to the next (no
    pool checkout, connection set-up and reset per transaction); a transaction that fails gives
    it back, so the next one starts on a fresh connection. Reads use the loop's default executor
    and the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._file = SqliteFile(engine)
        self._write_generation = 0  # of the file the kept write connection opened
        self._writer = for_writes(engine)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writes")
        self._write_connection: Connection | None = None  # only ever touched on that thread
        self._releases = 0  # how often release() was called; a write queued before one is dropped

    async def write(self, body: Body[T]) -> T:
        queued_after, queued_at = self._releases, time.monotonic()
        return await _hop(
            self._write_thread, lambda: self._write_here(body, queued_after, queued_at)
        )

    def _write_here(self, body: Body[T], queued_after: int, queued_at: float) -> T:
        if queued_after != self._releases:
            # The store was released (the service is stopping) while this write waited its
            # turn: it fails at once, rather than wait in turn for a lock another process holds.
            raise DatabaseUnavailable("the store was released while this write waited")
        # The busy timeout bounds a write's wait from the moment it was asked for, its turn
        # behind the others included: while another process held the file's lock, each queued
        # write waited out the whole timeout in turn, and a request behind twenty waited 200 s
        # (a review's keyed reservations, held 48 s by a 50 s lock, where 10 s was promised).
        busy_ms = engine_module.SQLITE_BUSY_TIMEOUT_MS
        left_ms = busy_ms - (time.monotonic() - queued_at) * 1000
        if left_ms <= 0:
            # Busy, as a BEGIN that ran out of the busy timeout is: a worker holds the message
            # (workers/database_outage.py), the API answers 503.
            raise DatabaseUnavailable(
                "this write waited its turn past SQLite's busy timeout"
            ) from TimeoutError()
        generation = self._file.check()
        if generation != self._write_generation:
            # The file was replaced since the kept connection opened (seen here or by a read):
            # that connection is to the old one, and what it wrote would be lost.
            self._release()
            self._write_generation = generation
        conn = self._write_connection or self._writer.connect()
        self._write_connection = None
        shortened = left_ms < busy_ms - SHORTEN_AFTER_MS
        try:
            if shortened:
                _busy_timeout(conn, left_ms)
            try:
                with conn.begin():
                    result = body(conn)
            finally:
                if shortened:  # the connection goes on, kept here or in the pool
                    with contextlib.suppress(Exception):
                        _busy_timeout(conn, busy_ms)
        except BaseException as exc:
            conn.close()
            if opened_read_only(exc):
                # Opened while the file could not be written; so may the pool's others have
                # been. A new pool opens new connections, which can write once the file can.
                self.engine.dispose()
            raise
        self._write_connection = conn
        return result

    async def read(self, body: Body[T]) -> T:
        engine = self.engine

        def transaction() -> T:
            self._file.check()
            with engine.connect() as conn:
                return body(conn)

        return await _hop(None, transaction)  # the loop's default executor: reads run side by side

    def release(self) -> None:
        """Give the write thread's connection back to the pool, after the write in progress; the
        writes queued behind it fail at once (DatabaseUnavailable). The store's engine does this
        when it is disposed. Each queued write could otherwise wait out SQLite's busy timeout
        in turn, on the event loop, when another process holds the file's lock: a worker
        stopped with 64 requests in flight took over a minute (a fault campaign). Like the
        engine, the store stays usable: a later write connects again."""
        self._releases += 1
        self._write_thread.submit(self._release).result()

    def _release(self) -> None:
        if self._write_connection is not None:
            self._write_connection.close()
            self._write_connection = None


class SqliteFile:
    """Where the store's SQLite file is, and which file it was when its connections opened.

    Deleted under the running services (by hand, or a reset that did not check), the file
    lived on for the connections that had it open, and every write after that went to it:
    answered, acknowledged, then lost with the last of those connections (a review's: the
    worker then refused to start, no tables; after a migrate the old API still showed the
    lost reservations). So each transaction first looks at the path (one ``stat``): gone,
    the transaction fails as the database busy (:class:`DatabaseFileGone`: a worker holds the
    message, the API answers 503) until the file is there again; replaced (migrated anew),
    the pool's connections, all to the old file, are replaced too (and the write thread's
    kept one, which a dispose does not close)."""

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database
        sqlite = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self.engine = engine
        self.path = os.path.abspath(database) if sqlite and database else None
        self._identity = self._now()
        # Bumped at each replacement: a connection opened before it is to the old file. Reads
        # and writes check from different threads, and either may see it first.
        self.generation = 0
        self._lock = threading.Lock()

    def _now(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def check(self) -> int:
        """The generation of the file at the path, the pool disposed if it is another than
        before; DatabaseFileGone if there is none."""
        if self.path is None:
            return 0
        now = self._now()
        with self._lock:
            if now is None:
                if self._identity is None:
                    return self.generation  # never seen: SQLite creates it on first connect
                raise DatabaseFileGone(
                    f"the SQLite file {self.path} was deleted while the services ran: nothing "
                    "is written until it is back (`make migrate` creates it anew)"
                )
            if now != self._identity:
                known, self._identity = self._identity, now
                if known is not None:
                    log.warning("the SQLite file %s was replaced; reconnecting to it", self.path)
                    self.generation += 1
                    self.engine.dispose()
            return self.generation


def _busy_timeout(conn: Connection, ms: float) -> None:
    """SQLite's busy timeout for ``conn``, on the DBAPI connection (no statement span)."""
    driver = conn.connection.driver_connection
    if driver is not None:
        driver.execute(f"PRAGMA busy_timeout={max(int(ms), 1)}")


def _in_transaction(conn: Connection, body: Body[T]) -> T:
    """Begin, run and commit in the one greenlet ``run_sync`` starts. ``AsyncEngine.begin``
    and its ``AsyncTransaction`` would each start one more for the ``BEGIN`` and the
    ``COMMIT``: on PostgreSQL ~0.1 ms of CPU per reservation (``bench.store_profile``)."""
    with conn.begin():
        return body(conn)


async def _hop(executor: ThreadPoolExecutor | None, call: Callable[[], T]) -> T:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, call)


def transactions_for(engine: AsyncEngine) -> Transactions:
    """Threaded on SQLite (through a synchronous twin of ``engine``), the async path elsewhere."""
    if engine.dialect.name != "sqlite":
        return AsyncTransactions(engine)
    twin = sqlalchemy.create_engine(
        engine.url.set(drivername="sqlite+pysqlite"), **sqlite_options()
    )
    make_sqlite_transactional(twin)
    transactions = ThreadedTransactions(twin)

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def dispose_twin(_: Engine) -> None:
        transactions.release()
        twin.dispose()

    return transactions
