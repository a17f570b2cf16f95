"""The hot path's statements, run on the database driver's cursor.

``Connection.execute`` wraps each statement in some 50 µs of Python: an execution context,
events, a result object. That is more than the database spends on the statement, and the
reservation path runs three of them per reservation. On SQLite it is worse: that Python runs on
the write thread (:mod:`store.transactions`), where it competes with the event loop for the GIL
(the bench's CPU per reservation is in the README's Performance section).

So the hot statements (:mod:`store.statements`) run here, inside the same SQLAlchemy
transaction (``Connection.begin``: ``BEGIN IMMEDIATE`` on SQLite), on the connection's own
DBAPI cursor. What does not change:

- the SQL: SQLAlchemy compiles each statement once per dialect, bind order and constants
  included, and types the columns it returns (a SQLite timestamp still reads as a datetime);
- the errors: the driver's are raised as SQLAlchemy's (an ``IntegrityError`` is an
  ``IntegrityError``), without parameters; a lost connection is invalidated, as SQLAlchemy does;
- a schema changed by another process: as SQLAlchemy's asyncpg dialect does around each
  statement, the cursor is told when the dialect last saw the schema change (so statements
  prepared before it are prepared again), and asyncpg's error for a statement prepared
  before an unseen change makes the dialect see it (:func:`_stamp_schema_time`);
- the trace: one CLIENT span per statement, from the :class:`StatementSpans` port, named and
  attributed as the SQLAlchemy instrumentation names its own (``messaging.telemetry.db_spans``).

Only these statements: everything else goes through ``Connection.execute`` as usual.
"""

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert, UpdateBase

# A span around one statement the driver runs, given the statement's SQL.
StatementSpans = Callable[[str], AbstractContextManager[object]]


def no_spans(sql: str) -> AbstractContextManager[None]:
    return nullcontext()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[str, ...] | None  # positional bind names in order; None: named parameters
    constants: Mapping[str, Any]  # binds the statement fixes itself (a literal in a WHERE)
    row: Callable[..., Any] | None  # a named tuple of the RETURNING columns
    processors: tuple[Callable[[Any], Any] | None, ...]  # empty: no column needs one

    def parameters(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.constants, **values} if self.constants else values
        return merged if self.binds is None else tuple([merged[name] for name in self.binds])

    def read(self, found: Sequence[Any]) -> Any:
        assert self.row is not None
        if not self.processors:
            return self.row(*found)
        pairs = zip(self.processors, found, strict=True)
        return self.row(*[value if p is None else p(value) for p, value in pairs])


class DriverStatements:
    """Runs the hot statements on a connection's DBAPI cursor; compiles each on first use."""

    def __init__(self, spans: StatementSpans = no_spans) -> None:
        self._spans = spans
        self._compiled: dict[tuple[UpdateBase, Dialect, tuple[str, ...]], _Compiled] = {}

    def first(
        self, conn: Connection, statement: UpdateBase, values: Mapping[str, Any]
    ) -> Any | None:
        """The first row the statement returns (RETURNING), or None."""
        return self._run(conn, statement, values, fetch=True)

    def execute(self, conn: Connection, statement: UpdateBase, values: Mapping[str, Any]) -> None:
        self._run(conn, statement, values, fetch=False)

    def _run(
        self, conn: Connection, statement: UpdateBase, values: Mapping[str, Any], *, fetch: bool
    ) -> Any | None:
        compiled = self._compile(statement, conn.dialect, values)
        dbapi = conn.connection
        cursor = dbapi.cursor()
        asyncpg = _stamp_schema_time(conn.dialect, cursor)
        try:
            with self._spans(compiled.sql):
                cursor.execute(compiled.sql, compiled.parameters(values))
                found = cursor.fetchone() if fetch else None
        except conn.dialect.loaded_dbapi.Error as exc:
            if asyncpg and _schema_changed_unseen(conn.dialect, exc):
                conn.dialect._invalidate_schema_cache()  # type: ignore[attr-defined]
            lost = conn.dialect.is_disconnect(exc, dbapi.dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql,
                None,
                exc,
                conn.dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=lost,
                dialect=conn.dialect,
            ) from exc
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled mid-statement (store.transactions' timeout, say): the connection
                # is in an unknown state, and may be waiting on a server that does not answer.
                # SQLAlchemy invalidates it for such an "exit exception"; so do we.
                conn.invalidate(exc)
            raise
        finally:
            cursor.close()
        return None if found is None or compiled.row is None else compiled.read(found)

    def _compile(
        self, statement: UpdateBase, dialect: Dialect, values: Mapping[str, Any]
    ) -> _Compiled:
        key = (statement, dialect, tuple(values))  # statement by identity: they are constants
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _compile(statement, dialect, sorted(values))
        return compiled


def _stamp_schema_time(dialect: Dialect, cursor: Any) -> bool:
    """On asyncpg, what SQLAlchemy's execution context does before a statement
    (``PGExecutionContext_asyncpg.pre_exec``): stamp the cursor with the time the dialect last
    saw the schema change, so that a statement this connection prepared before it is prepared
    again. False (nothing done) on another driver."""
    asof = getattr(dialect, "_invalidate_schema_cache_asof", None)
    if asof is None:
        return False
    cursor._invalidate_schema_cache_asof = asof
    return True


def _schema_changed_unseen(dialect: Dialect, exc: Exception) -> bool:
    """asyncpg's errors for a schema change the dialect has not seen, on which SQLAlchemy
    invalidates the dialect's schema cache (``handle_dbapi_exception``): a statement prepared
    before the change, a type looked up before it."""
    dbapi = dialect.loaded_dbapi
    return isinstance(exc, (dbapi.InvalidCachedStatementError, dbapi.InternalServerError))


def _compile(statement: UpdateBase, dialect: Dialect, names: list[str]) -> _Compiled:
    # An INSERT binds the columns it is given; the UPDATEs bind their own named parameters.
    compiled = statement.compile(
        dialect=dialect, column_keys=names if isinstance(statement, Insert) else None
    )
    constants = {
        name: value
        for name, value in compiled.construct_params(dict.fromkeys(names)).items()
        if name not in names
    }
    columns = list(statement.exported_columns)
    processors = tuple(
        c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
    )
    return _Compiled(
        sql=str(compiled),
        binds=tuple(compiled.positiontup or ()) if compiled.positional else None,
        constants=constants,
        row=namedtuple("Row", [c.key for c in columns]) if columns else None,  # type: ignore[misc]
        processors=processors if any(processors) else (),
    )
