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
- on PostgreSQL, by the asyncpg engine through ``AsyncConnection.run_sync``, without a thread.

The hop copies the caller's context, so the statement spans stay children of the current span.
The twin is made with ``sqlalchemy.create_engine`` looked up when it is called: once the
composition root has instrumented the process's engine (``messaging.db_spans.instrument_engine``,
before it makes the store), the SQLAlchemy instrumentation traces every engine created that
way, with the same tracer provider. Disposing the engine disposes its twin.
"""

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from store.engine import (
    BEGIN_OPTION,
    SQLITE_BUSY_TIMEOUT_MS,
    for_writes,
    make_sqlite_transactional,
)

T = TypeVar("T")
Body = Callable[[Connection], T]


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

    async def write(self, body: Body[T]) -> T:
        async with self._writer.begin() as conn:
            return await conn.run_sync(body)

    async def read(self, body: Body[T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(body)


class ThreadedTransactions:
    """A synchronous engine; each transaction is one call on a thread. The write thread is
    this store's own (and goes with it); reads use the loop's default executor."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writes")

    async def write(self, body: Body[T]) -> T:
        writer = self._writer

        def transaction() -> T:
            with writer.begin() as conn:
                return body(conn)

        return await _hop(self._write_thread, transaction)

    async def read(self, body: Body[T]) -> T:
        engine = self.engine

        def transaction() -> T:
            with engine.connect() as conn:
                return body(conn)

        return await _hop(None, transaction)  # the loop's default executor: reads run side by side


async def _hop(executor: ThreadPoolExecutor | None, call: Callable[[], T]) -> T:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, call)


def transactions_for(engine: AsyncEngine) -> Transactions:
    """Threaded on SQLite (through a synchronous twin of ``engine``), the async path elsewhere."""
    if engine.dialect.name != "sqlite":
        return AsyncTransactions(engine)
    twin = sqlalchemy.create_engine(
        engine.url.set(drivername="sqlite+pysqlite"),
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # Errors must not carry statement parameters (usernames) into spans and logs.
        hide_parameters=True,
    )
    make_sqlite_transactional(twin)

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def dispose_twin(_: Engine) -> None:
        twin.dispose()

    return ThreadedTransactions(twin)
