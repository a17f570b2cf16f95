"""Which database failures are the database's (worth a retry shortly), and which are busy.

The errors are the driver's own classes, chained as SQLAlchemy chains them: its DBAPIError
carries the driver's error as ``orig`` and as its cause. ``tests/integration/test_store.py``
meets the deadlock, the timeouts and the standby's refusal on a real server.
"""

import sqlite3

import asyncpg.exceptions as driver  # type: ignore[import-untyped]
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from store.availability import database_busy, database_gone
from store.engine import DatabaseUnavailable, failure
from store.failures import sqlstate, worth_running_again


def _wrapped(orig: Exception) -> DBAPIError:
    exc = DBAPIError("UPDATE users SET credits = credits - 1", None, orig)
    exc.__cause__ = orig
    return exc


@pytest.mark.parametrize(
    "orig",
    [
        driver.DiskFullError("could not extend file"),
        driver.OutOfMemoryError("out of memory"),
        driver.LockNotAvailableError("canceling statement due to lock timeout"),
        driver.QueryCanceledError("canceling statement due to statement timeout"),
        driver.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        driver.DeadlockDetectedError("deadlock detected"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_server_that_gave_up_for_now_is_busy(orig: Exception) -> None:
    exc = _wrapped(orig)
    assert database_gone(exc) and database_busy(exc)


@pytest.mark.parametrize(
    "orig",
    [
        driver.UniqueViolationError("duplicate key value violates unique constraint"),
        driver.UndefinedTableError('relation "users" does not exist'),
        driver.InsufficientPrivilegeError("permission denied for table users"),
        driver.CheckViolationError('new row violates check constraint "credits_not_negative"'),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_statement_that_fails_on_its_own_is_not_the_database(orig: Exception) -> None:
    exc = _wrapped(orig)
    assert not database_gone(exc) and not database_busy(exc)


def test_only_a_transaction_rolled_back_for_another_is_run_again() -> None:
    assert worth_running_again(_wrapped(driver.DeadlockDetectedError("deadlock detected")))
    assert worth_running_again(_wrapped(driver.SerializationError("could not serialize")))
    assert not worth_running_again(_wrapped(driver.LockNotAvailableError("lock timeout")))
    assert not worth_running_again(_wrapped(driver.UniqueViolationError("duplicate key")))


def test_the_sqlstate_is_found_down_the_chain_and_none_without_one() -> None:
    assert sqlstate(_wrapped(driver.DiskFullError("full"))) == "53100"
    assert sqlstate(_wrapped(RuntimeError("client side"))) is None


def _refused_at_connect(orig: Exception) -> DatabaseUnavailable:
    """As ``store.transactions._checked_out`` raises it: asyncpg's error comes unwrapped."""
    try:
        raise DatabaseUnavailable(failure(orig)) from orig
    except DatabaseUnavailable as exc:
        return exc


def test_a_new_connection_refused_for_too_many_is_busy() -> None:
    """The server answers, and its pooled connections work, so the outage probe ends every hold
    at once: held only that long, three attempts took under a second, and a fault campaign
    dead-lettered 56 messages while another client held every connection slot for 25 s."""
    for orig in (
        driver.TooManyConnectionsError("sorry, too many clients already"),
        driver.TooManyConnectionsError('too many connections for role "app"'),
    ):
        exc = _refused_at_connect(orig)
        assert database_gone(exc) and database_busy(exc)


def test_a_server_that_cannot_be_reached_is_gone_but_not_busy() -> None:
    for orig in (
        ConnectionRefusedError(111, "Connect call failed"),
        driver.CannotConnectNowError("the database system is starting up"),
        driver.InvalidCatalogNameError('database "app" does not exist'),
    ):
        exc = _refused_at_connect(orig)
        assert database_gone(exc) and not database_busy(exc)


def _sqlite(code: int, message: str) -> DBAPIError:
    """As SQLAlchemy wraps it: its OperationalError, for the driver's."""
    orig = sqlite3.OperationalError(message)
    orig.sqlite_errorcode = code
    exc = OperationalError("UPDATE users SET credits = credits - 1", None, orig)
    exc.__cause__ = orig
    return exc


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (5, "database is locked"),
        (6, "database table is locked"),
        (8, "attempt to write a readonly database"),
        (10, "disk I/O error"),
        (10 | (3 << 8), "disk I/O error"),  # SQLITE_IOERR_WRITE
        (13, "database or disk is full"),
    ],
)
def test_a_sqlite_file_that_cannot_do_the_work_now_is_busy(code: int, message: str) -> None:
    exc = _sqlite(code, message)
    assert database_gone(exc) and database_busy(exc)


def test_a_sqlite_statement_that_fails_on_its_own_is_not_busy() -> None:
    """SQLite files both as an OperationalError: held as busy, a schema not migrated would be
    held for ever."""
    assert not database_busy(_sqlite(1, "no such table: users"))
