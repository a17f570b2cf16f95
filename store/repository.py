"""Reads and writes of users, items and reservations.

:meth:`SqlStore.reserve` is the whole credit check in one transaction, keyed by reservation id:

1. ``UPDATE users SET credits = credits - price WHERE credits >= price RETURNING ...``: the
   check and the deduction are one statement, so concurrent reservations for the same user can
   never both spend the same credits (PostgreSQL row lock; SQLite ``BEGIN IMMEDIATE``);
2. ``INSERT`` the reservation with its outcome, primary key = reservation id;
3. ``COMMIT``.

A redelivered message fails step 2 on the primary key, which rolls back step 1, and the stored
answer is returned instead: a reservation is charged at most once, however often it arrives.

Each transaction is a plain function of a synchronous connection, run in one go by
:mod:`store.transactions` (one thread hop on SQLite); the hot statements by :mod:`store.driver`.
"""

import time
from dataclasses import replace
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.credits import MAX_CREDITS, CreditLimitExceeded, decide
from domain.reservations import Balance, Item, Outcome, Reservation
from store import idempotency
from store import statements as sql
from store.driver import DriverStatements, StatementSpans, no_spans
from store.idempotency import KeyClaim
from store.tables import items, reservations, users
from store.transactions import transactions_for

# Times the deduction is tried in one transaction when the balance read after a failed try
# covers the price (a top-up committed in between).
DEDUCT_TRIES = 3


class SqlStore:
    def __init__(self, engine: AsyncEngine, spans: StatementSpans = no_spans) -> None:
        self._engine = engine
        self._transactions = transactions_for(engine)
        self._driver = DriverStatements(spans)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        """Check and deduct credits, record the outcome and its trace, once per reservation."""

        def transaction(conn: Connection) -> Reservation:
            reservation = self._deduct(conn, reservation_id, username, item_id)
            reservation = replace(reservation, trace_id=trace_id)
            self._record(conn, reservation)
            return reservation

        try:
            return await self._transactions.write(transaction)
        except IntegrityError:
            existing = await self.get_reservation(reservation_id)
            if existing is None:
                raise
            return existing.as_replayed()

    def _deduct(
        self, conn: Connection, reservation_id: UUID, username: str, item_id: str
    ) -> Reservation:
        params = {"p_username": username, "p_item_id": item_id}
        for _ in range(DEDUCT_TRIES):
            deducted = self._driver.first(conn, sql.DEDUCT, params)
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
            current = conn.execute(sql.BALANCE_AND_PRICE, params).first()
            credits = None if current is None else current.credits
            price = None if current is None else current.price
            outcome = decide(credits, price)
            if outcome is not Outcome.CONFIRMED:
                return Reservation(reservation_id, username, item_id, outcome, price, credits)
            # A top-up committed between the two statements (PostgreSQL reads what committed
            # before each statement): the balance now covers the price, and the row is locked.
        # Only a price raised again and again in between gets here: the UPDATE's answer stands.
        return Reservation(
            reservation_id, username, item_id, Outcome.REJECTED_INSUFFICIENT_CREDITS, price, credits
        )

    def _record(self, conn: Connection, reservation: Reservation) -> None:
        """Record the outcome, inside reserve()'s transaction (the idempotency key)."""
        self._driver.execute(
            conn,
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
        now = int(time.time())
        try:
            return await self._transactions.write(
                lambda conn: idempotency.claim(conn, wanted, now, ttl_s)
            )
        except IntegrityError:  # a concurrent first request bound it (PostgreSQL)
            held = await self._transactions.read(
                lambda conn: idempotency.find(conn, wanted.scope, wanted.key)
            )
            if held is None:
                raise
            return held

    async def get_reservation(self, reservation_id: UUID) -> Reservation | None:
        return await self._transactions.read(lambda conn: _get_reservation(conn, reservation_id))

    async def get_credits(self, username: str) -> int | None:
        def read(conn: Connection) -> int | None:
            credits: int | None = conn.scalar(
                select(users.c.credits).where(users.c.username == username)
            )
            return credits

        return await self._transactions.read(read)

    async def prepare_download(self, reservation_id: UUID, token: str) -> Reservation | None:
        """Attach a download token to a confirmed reservation, once: a redelivered event keeps
        the first token. None if there is no such confirmed reservation."""

        def transaction(conn: Connection) -> Reservation | None:
            params = {"p_id": str(reservation_id), "p_token": token}
            row = self._driver.first(conn, sql.PREPARE_DOWNLOAD, params)
            # None: a redelivered event (the first token stays), or no such confirmed one.
            return _reservation(row) if row else _get_reservation(conn, reservation_id)

        reservation = await self._transactions.write(transaction)
        if reservation is None or reservation.download_token is None:
            return None
        return reservation

    async def find_download(self, token: str) -> Reservation | None:
        def read(conn: Connection) -> Reservation | None:
            found = conn.scalar(
                select(reservations.c.reservation_id).where(reservations.c.download_token == token)
            )
            return None if found is None else _get_reservation(conn, UUID(found))

        return await self._transactions.read(read)

    async def list_users(self) -> list[Balance]:
        def read(conn: Connection) -> list[Balance]:
            rows = conn.execute(select(users).order_by(users.c.username))
            return [Balance(row.username, row.credits) for row in rows]

        return await self._transactions.read(read)

    async def list_items(self) -> list[Item]:
        def read(conn: Connection) -> list[Item]:
            rows = conn.execute(select(items).order_by(items.c.item_id))
            return [Item(row.item_id, row.price) for row in rows]

        return await self._transactions.read(read)

    async def add_credits(self, username: str, amount: int) -> int | None:
        """Top up a user's credits; None if there is no such user. Raises CreditLimitExceeded
        rather than go past MAX_CREDITS (the column is a 32-bit integer)."""

        def transaction(conn: Connection) -> int | None:
            credits: int | None = conn.scalar(
                update(users)
                .where(users.c.username == username, users.c.credits + amount <= MAX_CREDITS)
                .values(credits=users.c.credits + amount)
                .returning(users.c.credits)
            )
            if credits is None and conn.scalar(sql.USER_EXISTS, {"p_username": username}):
                raise CreditLimitExceeded(f"a balance cannot exceed {MAX_CREDITS} credits")
            return credits

        return await self._transactions.write(transaction)


def _get_reservation(conn: Connection, reservation_id: UUID) -> Reservation | None:
    row = conn.execute(sql.BY_ID, {"p_id": str(reservation_id)}).first()
    return None if row is None else _reservation(row)


def _reservation(row: Any) -> Reservation:  # a Row, or the driver's named tuple
    r = row
    return Reservation(
        UUID(r.reservation_id), r.username, r.item_id, Outcome(r.outcome), r.price,
        r.credits_left, r.download_token, r.ready_at, r.trace_id,
    )  # fmt: skip
