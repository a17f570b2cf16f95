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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.credits import MAX_CREDITS, CreditLimitExceeded, decide
from domain.reservations import Balance, Item, Outcome, Reservation
from store import idempotency
from store import statements as sql
from store.engine import for_writes
from store.idempotency import KeyClaim
from store.tables import items, reservations, users


class SqlStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = for_writes(engine)
        # SQLite has one writer per database file. Without this lock every concurrent
        # transaction of this process takes a pooled connection into BEGIN IMMEDIATE and
        # naps in SQLite's busy handler (1-100 ms at a time) until the file lock frees:
        # under load that is most of a reservation's latency. Queued on the lock instead,
        # they run back to back. PostgreSQL locks rows and needs no such thing.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

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

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        """Check and deduct credits, record the outcome and its trace, once per reservation."""
        try:
            async with self._write() as conn:
                reservation = await self._deduct(conn, reservation_id, username, item_id)
                reservation = replace(reservation, trace_id=trace_id)
                await self._record(conn, reservation)
                return reservation
        except IntegrityError:
            existing = await self.get_reservation(reservation_id)
            if existing is None:
                raise
            return existing.as_replayed()

    async def _deduct(
        self, conn: AsyncConnection, reservation_id: UUID, username: str, item_id: str
    ) -> Reservation:
        params = {"p_username": username, "p_item_id": item_id}
        deducted = (await conn.execute(sql.DEDUCT, params)).first()
        if deducted is not None:
            return Reservation(
                reservation_id,
                username,
                item_id,
                Outcome.CONFIRMED,
                deducted.price,
                deducted.credits,
            )
        # The conditional UPDATE did not happen: say why, with the domain's rule.
        current = (await conn.execute(sql.BALANCE_AND_PRICE, params)).first()
        credits = None if current is None else current.credits
        price = None if current is None else current.price
        outcome = decide(credits, price)
        if outcome is Outcome.CONFIRMED:
            # A top-up landed between the two statements: the UPDATE's answer stands.
            outcome = Outcome.REJECTED_INSUFFICIENT_CREDITS
        return Reservation(reservation_id, username, item_id, outcome, price, credits)

    async def _record(self, conn: AsyncConnection, reservation: Reservation) -> None:
        """Record the outcome, inside reserve()'s transaction (the idempotency key)."""
        await conn.execute(
            sql.RECORD,
            {
                "reservation_id": str(reservation.reservation_id),
                "username": reservation.username,
                "item_id": reservation.item_id,
                "outcome": reservation.outcome.value,
                "price": reservation.price,
                "credits_left": reservation.credits_left,
                "trace_id": reservation.trace_id,
            },
        )

    async def claim_key(self, wanted: KeyClaim, ttl_s: int) -> KeyClaim:
        """The claim holding this idempotency key: ``wanted`` if it was free or expired."""
        try:
            async with self._write() as conn:
                return await idempotency.claim(conn, wanted, int(time.time()), ttl_s)
        except IntegrityError:  # a concurrent first request bound it (PostgreSQL)
            async with self._engine.connect() as conn:
                held = await idempotency.find(conn, wanted.scope, wanted.key)
            if held is None:
                raise
            return held

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
            await conn.execute(
                sql.PREPARE_DOWNLOAD, {"p_id": str(reservation_id), "p_token": token}
            )
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
            if credits is None and await conn.scalar(sql.USER_EXISTS, {"p_username": username}):
                raise CreditLimitExceeded(f"a balance cannot exceed {MAX_CREDITS} credits")
        return credits


async def _get_reservation(conn: AsyncConnection, reservation_id: UUID) -> Reservation | None:
    row = (await conn.execute(sql.BY_ID, {"p_id": str(reservation_id)})).first()
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
        row.trace_id,
    )
