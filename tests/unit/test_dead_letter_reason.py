"""A dead letter's reason names the error, bounded: the class alone (``ProgrammingError``)
could not tell a revoked permission from a missing table (a fault campaign). A database
error is named by its driver's innermost class, whose message may quote a parameter's value;
SQLite's messages, which never do, are kept."""

import sqlite3

import asyncpg.exceptions  # type: ignore[import-untyped]
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError

from messaging.delivery import REASON_DETAIL, error_summary


def _as_sqlalchemy_wraps(error: Exception, wrapper: type[Exception]) -> Exception:
    """The chain SQLAlchemy's asyncpg dialect builds: its DBAPI adapter's error, raised from
    asyncpg's, wrapped in SQLAlchemy's (``orig``)."""
    adapted = Exception(f"{type(error)}: {error}")
    adapted.__cause__ = error
    return wrapper("UPDATE users SET credits=$1::INTEGER", None, adapted)


def test_a_postgresql_error_is_named_by_its_class_never_its_message() -> None:
    denied = asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table users")
    assert error_summary(_as_sqlalchemy_wraps(denied, ProgrammingError)) == (
        "ProgrammingError: InsufficientPrivilegeError"
    )
    quoted = asyncpg.exceptions.DataError("invalid input for query argument $1: 'token-abc'")
    summary = error_summary(_as_sqlalchemy_wraps(quoted, DataError))
    assert summary == "DataError: DataError"
    assert "token-abc" not in summary


def test_a_sqlite_error_keeps_its_message() -> None:
    missing = sqlite3.OperationalError("no such table: users")
    error = OperationalError("UPDATE users SET credits=?", (1,), missing)
    assert error_summary(error) == "OperationalError: no such table: users"


def test_another_error_keeps_its_first_line_cut_short() -> None:
    assert error_summary(RuntimeError("on fire\nsecond line")) == "RuntimeError: on fire"
    assert len(error_summary(RuntimeError("x" * 1000))) == len("RuntimeError: ") + REASON_DETAIL
    assert error_summary(RuntimeError()) == "RuntimeError"
    assert error_summary(RuntimeError("  \n  ")) == "RuntimeError"
