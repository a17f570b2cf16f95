"""What a database error says, read from the SQLSTATE and the chain of causes.

SQLAlchemy's error wraps its DBAPI adapter's, which wraps the driver's own (asyncpg's), and the
server's SQLSTATE rides on the last two. Two questions are asked of a failed transaction here:
whether to run it again at once (:func:`worth_running_again`, in :mod:`store.transactions`),
and whether the server gave up on the work for now (:func:`server_gave_up_for_now`, one of the
ways :mod:`store.availability` tells a busy database from a failed statement). On SQLite, one
more: whether the connection can never write (:func:`opened_read_only`).
"""

from collections.abc import Iterator

import asyncpg.exceptions as driver  # type: ignore[import-untyped]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then the chain of its causes: SQLAlchemy's error wraps its DBAPI adapter's,
    which wraps the driver's own. A chain is a few links long; this never loops on a cycle."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__


def stale_schema(exc: BaseException) -> bool:
    """A statement met a schema that another process changed (an ``ALTER TABLE``) after this
    connection prepared it: asyncpg's InvalidCachedStatementError, or its "cache lookup failed
    for type" for a type looked up before the change. The dialect has seen the change once this
    is raised (SQLAlchemy's handling, or :mod:`store.driver`'s), so the same transaction run
    again prepares its statements afresh."""
    return any(
        isinstance(cause, driver.InvalidCachedStatementError)
        or (isinstance(cause, driver.InternalServerError) and "cache lookup failed" in str(cause))
        for cause in causes(exc)
    )


# SQLSTATEs of a transaction that PostgreSQL rolled back so that another could go on:
# serialization_failure and deadlock_detected. Its documentation's advice is to run the
# transaction again ("Serialization Failure Handling"); nothing of it was committed.
ROLLED_BACK_FOR_ANOTHER = frozenset({"40001", "40P01"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the server gave, from the first of :func:`causes` that carries one (the
    DBAPI adapter's error, asyncpg's); None for a client-side error."""
    codes = (getattr(cause, "sqlstate", None) for cause in causes(exc))
    return next((code for code in codes if isinstance(code, str)), None)


def worth_running_again(exc: BaseException) -> bool:
    """The transaction failed, rolled back, for a reason of the moment that running it again
    at once may not meet: a schema change (:func:`stale_schema`), or the server chose it to
    give way to another (a deadlock, a serialization failure)."""
    return stale_schema(exc) or sqlstate(exc) in ROLLED_BACK_FOR_ANOTHER


# SQLSTATEs of a PostgreSQL server that answers but gave up on the work for now, besides a
# transaction it rolled back for another that store.transactions already ran again:
# lock_not_available (a lock not granted within the role's or database's ``lock_timeout``),
# query_canceled (past ``statement_timeout``, or cancelled by an operator), and
# read_only_sql_transaction (a write sent to a standby: a fail-over under way).
_GAVE_UP_FOR_NOW = ROLLED_BACK_FOR_ANOTHER | {"55P03", "57014", "25006"}
# And the whole class 53, insufficient resources: disk full, out of memory, too many
# connections, a configuration limit.
_INSUFFICIENT_RESOURCES = "53"


def server_gave_up_for_now(exc: BaseException) -> bool:
    """PostgreSQL answered, but gave up on the work for now (its SQLSTATE says so)."""
    code = sqlstate(exc)
    return code is not None and (code in _GAVE_UP_FOR_NOW or code[:2] == _INSUFFICIENT_RESOURCES)


# SQLite's primary result code for a write to a database it opened read-only (the low byte of
# the extended codes SQLITE_READONLY_*).
_SQLITE_READONLY = 8


def opened_read_only(exc: BaseException) -> bool:
    """SQLite refused a write as read-only. It opens a file it may not write at that moment
    read-only, without an error, and the connection stays so for life: once the file can be
    written again, only a new connection can write to it."""
    return any(
        isinstance(code := getattr(cause, "sqlite_errorcode", None), int)
        and code & 0xFF == _SQLITE_READONLY
        for cause in causes(exc)
    )
