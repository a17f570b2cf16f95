"""Whether a failure was the database's, and waiting until it answers again.

A statement that fails for its own reasons (a constraint, a bug) fails again when retried; a
database that is down, restarting or locked is worth a retry shortly. The API answers the
second kind with a 503 (``api/errors.py``), and a worker holds the message through it
(``workers/database_outage.py``).
"""

import asyncio
import sqlite3

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, wait_fixed

from store.engine import CONNECT_ERRORS, DatabaseFileGone, DatabaseUnavailable, transaction_timeout
from store.failures import server_gave_up_for_now

# SQLite's primary result codes for a file that cannot do the work now: SQLITE_BUSY, LOCKED,
# READONLY (write permission taken away), IOERR (a disk or file system that fails a read or
# write: one remounted read-only, a file made immutable; a review's had every message in
# flight dead-lettered within a second) and FULL.
SQLITE_BUSY_CODES = frozenset({5, 6, 8, 10, 13})


def database_gone(exc: BaseException) -> bool:
    """The database, or our connection to it, failed (as far as the driver can tell: asyncpg
    files a few client-side errors under InterfaceError too), rather than the statement: worth
    trying again shortly. A connection lost in the middle of a statement is a DBAPIError of no
    DBAPI class (asyncpg's error has none), marked ``connection_invalidated``. So is a
    PostgreSQL error whose SQLSTATE says the server gave up on the work for now: a deadlock, a
    lock or statement timeout, a standby's refusal to write, a full disk
    (:func:`database_busy`)."""
    if isinstance(
        exc,
        DatabaseUnavailable | OperationalError | InterfaceError | InternalError | PoolTimeout,
    ):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or server_gave_up_for_now(exc)


def database_busy(exc: BaseException) -> bool:
    """Of the failures :func:`database_gone` accepts, those of a database that answers but
    could not do the work: the transaction ran out of time (a lock held by another session,
    say), SQLite's file stayed locked past its busy timeout or its disk is full, no pooled
    connection came free, or PostgreSQL refused a new one (too many connections, for the
    server, the role or the database); PostgreSQL stopped a statement past its ``lock_timeout`` or
    ``statement_timeout``, refused a write as a standby, ran out of a resource (its disk, say),
    or rolled the transaction back in a deadlock more times than :mod:`store.transactions` runs
    it; or SQLite's file was deleted, until it is back. Not a lost connection, which the pool
    replaces at once."""
    if isinstance(exc, DatabaseFileGone):
        return True
    if isinstance(exc, DatabaseUnavailable):
        # Out of time, or a new connection refused by a server that answers: too many
        # connections (class 53). The outage probe cannot tell: it gets a pooled connection.
        return isinstance(exc.__cause__, TimeoutError) or server_gave_up_for_now(exc)
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    if isinstance(exc.orig, sqlite3.Error):
        # SQLite files every error of the moment and of the statement alike as an
        # OperationalError: "no such table" (a schema not migrated) was held as busy.
        return (exc.orig.sqlite_errorcode & 0xFF) in SQLITE_BUSY_CODES
    return isinstance(exc, OperationalError) or server_gave_up_for_now(exc)


async def until_reachable(engine: AsyncEngine, within: float, every: float = 0.5) -> bool:
    """True once the database answers ``SELECT 1`` (at once, if it does); False if it has not
    within ``within`` seconds, however long one try would wait (a connect to a frozen server,
    a ping, a full pool). A try that outlasts the engine's transaction timeout (a pooled
    connection gone silent) is abandoned, which closes that connection, and the next one
    goes on."""
    per_try = transaction_timeout(engine)
    if engine.dialect.name != "sqlite":
        # No transaction, so no ROLLBACK at close: one to a server that went silent right after
        # answering would wait for ever (closing an AsyncConnection ignores cancellation).
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with asyncio.timeout(within):
            async for attempt in AsyncRetrying(
                wait=wait_fixed(every),
                # TimeoutError, a try's own, is an OSError: one of the CONNECT_ERRORS.
                retry=retry_if_exception_type((*CONNECT_ERRORS, PoolTimeout)),
            ):
                with attempt:
                    async with asyncio.timeout(per_try), engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return False
    return True
