"""The twin's tables and statements, as plain SQL for SQLite (``?``) and PostgreSQL (``$n``).

The tables mirror ``store.tables``; the statements are the system's transaction, written out:

1. ``UPDATE users ... WHERE credits >= price RETURNING``: the check and the deduction in one
   statement (PostgreSQL row lock; SQLite ``BEGIN IMMEDIATE``);
2. if nothing was deducted, read the balance and the price to say why;
3. ``INSERT`` the reservation keyed by its id: a redelivery fails here, on the primary key,
   and rolls the deduction back, then the stored answer is read instead.
"""

import json
from pathlib import Path

CONFIRMED = "confirmed"
REJECTED = "rejected_insufficient_credits"
UNKNOWN_USER = "unknown_user"
UNKNOWN_ITEM = "unknown_item"

_TABLES = (
    "CREATE TABLE IF NOT EXISTS users (username VARCHAR(64) PRIMARY KEY, "
    "credits INTEGER NOT NULL CONSTRAINT users_credits_not_negative CHECK (credits >= 0))",
    "CREATE TABLE IF NOT EXISTS items (item_id VARCHAR(64) PRIMARY KEY, "
    "price INTEGER NOT NULL CONSTRAINT items_price_not_negative CHECK (price >= 0))",
    "CREATE TABLE IF NOT EXISTS reservations (reservation_id VARCHAR(36) PRIMARY KEY, "
    "username VARCHAR(64) NOT NULL, item_id VARCHAR(64) NOT NULL, outcome VARCHAR(40) NOT NULL, "
    "price INTEGER, credits_left INTEGER, "
    "created_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP, "
    "download_token VARCHAR(64) UNIQUE, ready_at {ts})",
)


def tables(postgres: bool) -> list[str]:
    ts = "TIMESTAMPTZ" if postgres else "TIMESTAMP"
    return [ddl.format(ts=ts) for ddl in _TABLES]


def seed_rows(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(users, items) from a seed file in ``store/seed.json``'s format."""
    data = json.loads(path.read_text())
    return list(data.get("users", {}).items()), list(data.get("items", {}).items())


class Sql:
    """The hot-path statements in one placeholder style."""

    def __init__(self, postgres: bool) -> None:
        p = [f"${n}" for n in range(1, 8)] if postgres else ["?"] * 7
        price = f"(SELECT price FROM items WHERE item_id = {p[0]})"
        self.seed_user = f"INSERT INTO users VALUES ({p[0]}, {p[1]}) ON CONFLICT DO NOTHING"
        self.seed_item = f"INSERT INTO items VALUES ({p[0]}, {p[1]}) ON CONFLICT DO NOTHING"
        # Parameters: item_id, username (PostgreSQL reuses $1; SQLite takes it three times).
        pu = p[1]
        self.deduct = (
            f"UPDATE users SET credits = credits - {price} WHERE username = {pu} "
            f"AND credits >= {price} RETURNING credits, {price}"
        )
        self.balance = f"SELECT credits, {price} FROM users WHERE username = {pu}"
        self.record = (
            "INSERT INTO reservations (reservation_id, username, item_id, outcome, price, "
            f"credits_left) VALUES ({', '.join(p[:6])})"
        )
        self.by_id = (
            f"SELECT outcome, price, credits_left FROM reservations WHERE reservation_id = {p[0]}"
        )
        # Parameters: token, reservation_id. The first token stays (idempotent).
        self.prepare = (
            f"UPDATE reservations SET download_token = {p[0]}, ready_at = CURRENT_TIMESTAMP "
            f"WHERE reservation_id = {p[1]} AND outcome = '{CONFIRMED}' "
            "AND download_token IS NULL"
        )
        self.token = f"SELECT download_token FROM reservations WHERE reservation_id = {p[0]}"
