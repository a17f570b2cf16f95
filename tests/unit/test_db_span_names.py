"""Database span names and operation from the statement: keyword, target, single collection."""

import pytest

from messaging.telemetry.db_spans import parse


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("BEGIN IMMEDIATE", ("BEGIN", None, None)),
        ("COMMIT", ("COMMIT", None, None)),
        ('PRAGMA main.table_info("users")', ("PRAGMA", None, None)),
        ("INSERT INTO reservations (a) VALUES (?)", ("INSERT", "reservations", "reservations")),
        # Acts on users; names two tables, so no db.collection.name.
        (
            "UPDATE users SET credits=credits - (SELECT items.price FROM items WHERE x = ?)",
            ("UPDATE", "users", None),
        ),
        # A subquery in the select list does not make its table the target.
        (
            "SELECT users.credits, (SELECT items.price FROM items) AS p FROM users",
            ("SELECT", "users", None),
        ),
        ('-- why\n/* who */ delete from "t" where 1', ("DELETE", "t", "t")),
        ("CREATE TABLE IF NOT EXISTS users (x INT)", ("CREATE", "users", "users")),
        ("INSERT INTO u (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 1", ("INSERT", "u", "u")),
        ("", ("", None, None)),
    ],
)
def test_parse(statement: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse(statement) == expected
