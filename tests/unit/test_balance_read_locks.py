"""The balance read after a deduction that did not happen locks the user's row on PostgreSQL,
so the deduction tried again meets the balance that was read (store/repository.py); SQLite's
``BEGIN IMMEDIATE`` already holds the file's write lock, and its SQL has no FOR UPDATE."""

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

from store import statements


def test_the_balance_read_locks_the_users_row_on_postgresql() -> None:
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    sql = str(statements.BALANCE_AND_PRICE.compile(dialect=dialect))
    assert sql.endswith("FOR UPDATE OF users")


def test_sqlite_has_no_row_lock_to_take() -> None:
    assert "FOR UPDATE" not in str(
        statements.BALANCE_AND_PRICE.compile(dialect=SQLiteDialect_aiosqlite())
    )
