"""Reads and writes of users, items and reservations.

:meth:`SqlStore.reserve` is the whole credit check in one transaction, keyed by reservation id:

1. ``UPDATE users SET credits = credits - price WHERE credits >= price RETURNING ...``: the
   check and the deduction are one statement, so concurrent reservations for the same user can
   never both spend the same credits (PostgreSQL row lock; SQLite ``BEGIN IMMEDIATE``);
2. ``INSERT`` the reservation with its outcome, primary key = reservation id;
3. ``COMMIT``.

A redelivered message fails step 2 on the primary key, which rolls back step 1, and the stored
answer is returned instead: a reservation is charged at most once, however often it arrives.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from messaging.messages import Outcome
from store.engine import for_writes
from store.tables import items, reservations, users

# The hot-path statements are built once: SQLAlchemy then reuses their cache keys and compiled
# SQL instead of rebuilding both for every message. (Bind names must not match column names
# in an UPDATE, hence the p_ prefix.)
_PRICE = select(items.c.price).where(items.c.item_id == bindparam("p_item_id")).scalar_subquery()
_DEDUCT = (
    update(users)
    .where(users.c.username == bindparam("p_username"), users.c.credits >= _PRICE)
    .values(credits=users.c.credits - _PRICE)
    .returning(users.c.credits, _PRICE.label("price"))
)
_BALANCE_AND_PRICE = select(users.c.credits, _PRICE.label("price")).where(
    users.c.username == bindparam("p_username")
)
_RECORD = insert(reservations)
_BY_ID = select(reservations).where(reservations.c.reservation_id == bindparam("p_id"))
_PREPARE_DOWNLOAD = (
    update(reservations)
    .where(
        reservations.c.reservation_id == bindparam("p_id"),
        reservations.c.outcome == Outcome.CONFIRMED.value,
        reservations.c.download_token.is_(None),
    )
    .values(download_token=bindparam("p_token"), ready_at=func.now())
)


_EXISTS = select(users.c.username).where(users.c.username == bindparam("p_username"))
# Balances stay well inside the 32-bit credits column.
MAX_CREDITS = 1_000_000_000


class CreditLimitExceeded(ValueError):
    """A top-up would take a balance past MAX_CREDITS."""


@dataclass(frozen=True)
class Reservation:
    reservation_id: UUID
    username: str
    item_id: str
    outcome: Outcome
    price: int | None
    credits_left: int | None
    download_token: str | None = None
    ready_at: datetime | None = None
    # True when this is the stored answer to a reservation that was already processed.
    replayed: bool = False


@dataclass(frozen=True)
class Balance:
    username: str
    credits: int


@dataclass(frozen=True)
class Item:
    item_id: str
    price: int


class SqlStore:
    def __init__(
        self, engine: AsyncEngine, before_commit: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._writer = for_writes(engine)
        # SQLite has one writer per database file. Without this lock every concurrent
        # transaction of this process takes a pooled connection into BEGIN IMMEDIATE and
        # naps in SQLite's busy handler (1-100 ms at a time) until the file lock frees:
        # under load that is most of a reservation's latency. Queued on the lock instead,
        # they run back to back. PostgreSQL locks rows and needs no such thing.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # Called inside reserve()'s transaction, after the deduction (the crash tests use it).
        self._before_commit = before_commit

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), one at a time on SQLite."""
        if self._write_lock is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    async def reserve(self, reservation_id: UUID, username: str, item_id: str) -> Reservation:
        """Check and deduct credits and record the outcome, exactly once per reservation id."""
        try:
            async with self._write() as conn:
                reservation = await self._decide(conn, reservation_id, username, item_id)
                if self._before_commit is not None:
                    self._before_commit()
                await conn.execute(
                    _RECORD,
                    {
                        "reservation_id": str(reservation_id),
                        "username": username,
                        "item_id": item_id,
                        "outcome": reservation.outcome.value,
                        "price": reservation.price,
                        "credits_left": reservation.credits_left,
                    },
                )
                return reservation
        except IntegrityError:
            existing = await self.get_reservation(reservation_id)
            if existing is None:
                raise
            return _replayed(existing)

    async def _decide(
        self, conn: AsyncConnection, reservation_id: UUID, username: str, item_id: str
    ) -> Reservation:
        params = {"p_username": username, "p_item_id": item_id}
        deducted = (await conn.execute(_DEDUCT, params)).first()
        if deducted is not None:
            return Reservation(
                reservation_id,
                username,
                item_id,
                Outcome.CONFIRMED,
                deducted.price,
                deducted.credits,
            )
        current = (await conn.execute(_BALANCE_AND_PRICE, params)).first()
        if current is None:
            outcome, credits, cost = Outcome.UNKNOWN_USER, None, None
        elif current.price is None:
            outcome, credits, cost = Outcome.UNKNOWN_ITEM, current.credits, None
        else:
            outcome, credits, cost = (
                Outcome.REJECTED_INSUFFICIENT_CREDITS,
                current.credits,
                current.price,
            )
        return Reservation(reservation_id, username, item_id, outcome, cost, credits)

    async def get_reservation(self, reservation_id: UUID) -> Reservation | None:
        async with self._engine.connect() as conn:
            return await _get_reservation(conn, reservation_id)

    async def get_credits(self, username: str) -> int | None:
        async with self._engine.connect() as conn:
            credits: int | None = await conn.scalar(
                select(users.c.credits).where(users.c.username == username)
            )
        return credits

    async def prepare_download(self, reservation_id: UUID, token: str) -> Reservation | None:
        """Attach a download token to a confirmed reservation, once: a redelivered event keeps
        the first token. None if there is no such confirmed reservation."""
        async with self._write() as conn:
            await conn.execute(_PREPARE_DOWNLOAD, {"p_id": str(reservation_id), "p_token": token})
            reservation = await _get_reservation(conn, reservation_id)
        if reservation is None or reservation.download_token is None:
            return None
        return reservation

    async def find_download(self, token: str) -> Reservation | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(reservations.c.reservation_id).where(
                        reservations.c.download_token == token
                    )
                )
            ).first()
        return None if row is None else await self.get_reservation(UUID(row.reservation_id))

    async def list_users(self) -> list[Balance]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.username))
            return [Balance(row.username, row.credits) for row in rows]

    async def list_items(self) -> list[Item]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(items).order_by(items.c.item_id))
            return [Item(row.item_id, row.price) for row in rows]

    async def add_credits(self, username: str, amount: int) -> int | None:
        """Top up a user's credits; None if there is no such user. Raises CreditLimitExceeded
        rather than go past MAX_CREDITS (the column is a 32-bit integer)."""
        async with self._write() as conn:
            credits: int | None = await conn.scalar(
                update(users)
                .where(users.c.username == username, users.c.credits + amount <= MAX_CREDITS)
                .values(credits=users.c.credits + amount)
                .returning(users.c.credits)
            )
            if credits is None and await conn.scalar(_EXISTS, {"p_username": username}):
                raise CreditLimitExceeded(f"a balance cannot exceed {MAX_CREDITS} credits")
        return credits


async def _get_reservation(conn: AsyncConnection, reservation_id: UUID) -> Reservation | None:
    row = (await conn.execute(_BY_ID, {"p_id": str(reservation_id)})).first()
    if row is None:
        return None
    return Reservation(
        UUID(row.reservation_id),
        row.username,
        row.item_id,
        Outcome(row.outcome),
        row.price,
        row.credits_left,
        row.download_token,
        row.ready_at,
    )


def _replayed(reservation: Reservation) -> Reservation:
    return Reservation(
        reservation.reservation_id,
        reservation.username,
        reservation.item_id,
        reservation.outcome,
        reservation.price,
        reservation.credits_left,
        reservation.download_token,
        reservation.ready_at,
        replayed=True,
    )
