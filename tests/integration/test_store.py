"""The credit ledger on real SQLite and PostgreSQL: atomic, idempotent, never negative."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import await_only

from domain.credits import MAX_CREDITS, CreditLimitExceeded
from domain.reservations import Outcome
from store.availability import database_busy, database_gone
from store.engine import open_engine
from store.migrate import migrate
from store.repository import SqlStore
from store.settings import StoreSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(store_settings: StoreSettings) -> AsyncIterator[SqlStore]:
    engine = await open_engine(store_settings)
    yield SqlStore(engine)
    await engine.dispose()


async def test_confirmed_deducts_the_price(store: SqlStore) -> None:
    reservation = await store.reserve(uuid.uuid4(), "alice", "book-1")
    assert reservation.outcome is Outcome.CONFIRMED
    assert (reservation.price, reservation.credits_left) == (10, 90)
    assert await store.get_credits("alice") == 90


@pytest.mark.parametrize(
    ("username", "item_id", "outcome", "credits_left"),
    [
        ("bob", "book-2", Outcome.REJECTED_INSUFFICIENT_CREDITS, 5),
        ("nobody", "book-1", Outcome.UNKNOWN_USER, None),
        ("alice", "no-such-item", Outcome.UNKNOWN_ITEM, 100),
    ],
)
async def test_rejections_are_recorded_and_charge_nothing(
    store: SqlStore, username: str, item_id: str, outcome: Outcome, credits_left: int | None
) -> None:
    reservation_id = uuid.uuid4()
    reservation = await store.reserve(reservation_id, username, item_id)
    assert reservation.outcome is outcome
    assert reservation.credits_left == credits_left
    stored = await store.get_reservation(reservation_id)
    assert stored is not None and stored.outcome is outcome
    if credits_left is not None:
        assert await store.get_credits(username) == credits_left


async def test_redelivery_returns_the_stored_answer_and_charges_once(store: SqlStore) -> None:
    reservation_id = uuid.uuid4()
    first = await store.reserve(reservation_id, "alice", "book-1")
    again = await store.reserve(reservation_id, "alice", "book-1")
    assert not first.replayed and again.replayed
    assert (again.outcome, again.credits_left) == (first.outcome, first.credits_left)
    assert await store.get_credits("alice") == 90


async def test_concurrent_reservations_never_overspend(store_settings: StoreSettings) -> None:
    """Two engines (as two worker processes would have) race for one user's credits."""
    engines = [await open_engine(store_settings) for _ in range(2)]
    stores = [SqlStore(engine) for engine in engines]
    try:
        attempts = 30  # alice has 100 credits; book-1 costs 10
        results = await asyncio.gather(
            *(stores[i % 2].reserve(uuid.uuid4(), "alice", "book-1") for i in range(attempts))
        )
        confirmed = [r for r in results if r.outcome is Outcome.CONFIRMED]
        assert len(confirmed) == 10
        assert await stores[0].get_credits("alice") == 0
        assert sorted(r.credits_left or 0 for r in confirmed) == list(range(0, 100, 10))
    finally:
        for engine in engines:
            await engine.dispose()


async def test_same_reservation_delivered_to_two_workers_at_once(
    store_settings: StoreSettings,
) -> None:
    engines = [await open_engine(store_settings) for _ in range(2)]
    try:
        reservation_id = uuid.uuid4()
        results = await asyncio.gather(
            *(SqlStore(e).reserve(reservation_id, "alice", "book-1") for e in engines)
        )
        assert {r.credits_left for r in results} == {90}
        assert sorted(r.replayed for r in results) == [False, True]
        assert await SqlStore(engines[0]).get_credits("alice") == 90
    finally:
        for engine in engines:
            await engine.dispose()


async def test_seeding_is_idempotent_and_keeps_balances(store_settings: StoreSettings) -> None:
    engine = await open_engine(store_settings)
    await SqlStore(engine).reserve(uuid.uuid4(), "alice", "book-1")
    await engine.dispose()
    await migrate(store_settings)  # migrates and seeds again
    engine = await open_engine(store_settings)
    try:
        assert await SqlStore(engine).get_credits("alice") == 90
    finally:
        await engine.dispose()


async def test_top_up_cannot_pass_the_credit_limit(store: SqlStore) -> None:
    assert await store.add_credits("alice", 5) == 105
    with pytest.raises(CreditLimitExceeded):
        await store.add_credits("alice", MAX_CREDITS)
    assert await store.get_credits("alice") == 105
    assert await store.add_credits("nobody", 5) is None


async def test_a_download_is_prepared_once_and_only_for_a_confirmed_reservation(
    store: SqlStore,
) -> None:
    confirmed = await store.reserve(uuid.uuid4(), "alice", "book-1")
    first = await store.prepare_download(confirmed.reservation_id, "token-1")
    assert first is not None
    assert (first.reservation_id, first.download_token) == (confirmed.reservation_id, "token-1")
    assert first.outcome is Outcome.CONFIRMED and first.ready_at is not None
    # A redelivered event: the first token and time stay.
    again = await store.prepare_download(confirmed.reservation_id, "token-2")
    assert again is not None
    assert (again.download_token, again.ready_at) == ("token-1", first.ready_at)
    assert await store.find_download("token-2") is None

    rejected = await store.reserve(uuid.uuid4(), "bob", "book-2")
    assert await store.prepare_download(rejected.reservation_id, "token-3") is None
    assert await store.prepare_download(uuid.uuid4(), "token-4") is None
    stored = await store.get_reservation(rejected.reservation_id)
    assert stored is not None and stored.download_token is None


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE users ALTER COLUMN credits TYPE bigint",
        "ALTER TABLE reservations ALTER COLUMN ready_at TYPE timestamp without time zone",
    ],
)
async def test_a_schema_change_by_another_process_fails_no_transaction(
    store: SqlStore, store_settings: StoreSettings, ddl: str
) -> None:
    """Another process changes a column's type (an online migration): every pooled connection
    holds statements prepared for the old one, and asyncpg refuses to run them
    (InvalidCachedStatementError). The hot statements run on the driver's cursor, past the
    SQLAlchemy code that notices the schema changed: every reservation after the change failed
    until the worker restarted (a fault campaign dead-lettered 80 of 80). A transaction that
    meets a statement prepared before the change now runs once more, prepared afresh."""
    warm = [uuid.uuid4() for _ in range(4)]
    for reservation in await asyncio.gather(*(store.reserve(r, "alice", "book-1") for r in warm)):
        assert reservation.outcome is Outcome.CONFIRMED
    for reservation_id in warm:  # the token's UPDATE, prepared on the pooled connections
        assert await store.prepare_download(reservation_id, uuid.uuid4().hex) is not None

    other = await open_engine(store_settings)  # another dialect: as another process's would be
    try:
        async with other.begin() as conn:
            await conn.exec_driver_sql(ddl)
    finally:
        await other.dispose()

    after = [uuid.uuid4() for _ in range(4)]
    found = await asyncio.gather(*(store.reserve(r, "alice", "book-1") for r in after))
    assert [r.outcome for r in found] == [Outcome.CONFIRMED] * 4
    for reservation_id in after:
        assert await store.prepare_download(reservation_id, uuid.uuid4().hex) is not None
    assert await store.get_credits("alice") == 100 - 10 * 8


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_top_up_between_the_deduction_and_the_balance_read_confirms(
    store_settings: StoreSettings,
) -> None:
    """On PostgreSQL each statement reads what committed before it: a top-up that commits
    after the conditional deduction found too few credits, and before the balance is read to
    say why, used to give a rejection that named a balance covering the price ("the item costs
    10, 26 left"; a fault campaign had 28 in 777 rejections racing top-ups). The top-up is
    made here at that very moment, from the statement-span port around the deduction, through
    the store's own top-up on another engine (as the API's would be)."""
    other = await open_engine(store_settings)
    topping_up = SqlStore(other)
    deductions = 0

    @contextmanager
    def top_up_after_the_first_deduction(sql: str) -> Iterator[None]:
        nonlocal deductions
        yield
        if sql.startswith("UPDATE users") and (deductions := deductions + 1) == 1:
            # Inside the transaction's greenlet (AsyncConnection.run_sync): await from there.
            assert await_only(topping_up.add_credits("bob", 100)) == 105

    engine = await open_engine(store_settings)
    try:
        store = SqlStore(engine, spans=top_up_after_the_first_deduction)
        reservation = await store.reserve(uuid.uuid4(), "bob", "book-2")  # bob has 5 credits
        assert reservation.outcome is Outcome.CONFIRMED, reservation
        assert deductions == 2
        assert (reservation.price, reservation.credits_left) == (BOOK_2, 105 - BOOK_2)
        assert await store.get_credits("bob") == reservation.credits_left
    finally:
        await engine.dispose()
        await other.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_reservation_chosen_as_a_deadlock_victim_runs_again_and_charges_once(
    store_settings: StoreSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session and a reservation wait on each other: PostgreSQL rolls one back
    (deadlock_detected) and advises running it again. The reservation's transaction failed
    with it; it now runs again within its deadline. The deadlock is real, made from the
    statement-span port: after the deduction (the reservation holds alice's row), another
    session inserts a reservation of the same id, which the reservation's own insert waits on;
    0.3 s later that session updates alice's row. The reservation waited first, so its backend
    finds the cycle (after ``deadlock_timeout``, 1 s) and is the one rolled back."""
    reservation_id = uuid.uuid4()
    other = await open_engine(store_settings)
    deductions = 0
    waiting: list[asyncio.Future[None]] = []

    async def insert_the_same_id() -> AsyncConnection:
        conn = await other.connect()
        await conn.begin()
        await conn.execute(
            text(
                "INSERT INTO reservations (reservation_id, username, item_id, outcome) "
                "VALUES (:id, 'bob', 'book-2', 'confirmed')"
            ),
            {"id": str(reservation_id)},
        )
        return conn

    async def then_wait_on_alice(conn: AsyncConnection) -> None:
        try:
            await asyncio.sleep(0.3)
            await conn.execute(text("UPDATE users SET credits = credits WHERE username = 'alice'"))
        finally:
            await conn.rollback()
            await conn.close()

    @contextmanager
    def deadlock_after_the_first_deduction(sql: str) -> Iterator[None]:
        nonlocal deductions
        yield
        if sql.startswith("UPDATE users") and (deductions := deductions + 1) == 1:
            # Inside the transaction's greenlet (AsyncConnection.run_sync): await from there.
            conn = await_only(insert_the_same_id())
            waiting.append(asyncio.ensure_future(then_wait_on_alice(conn)))

    engine = await open_engine(store_settings)
    try:
        store = SqlStore(engine, spans=deadlock_after_the_first_deduction)
        with caplog.at_level(logging.WARNING, logger="store.transactions"):
            reservation = await store.reserve(reservation_id, "alice", "book-1")
        await asyncio.gather(*waiting)
        assert (reservation.outcome, reservation.replayed) == (Outcome.CONFIRMED, False)
        assert deductions == 2
        assert "deadlock detected" in caplog.text
        assert await store.get_credits("alice") == 90  # charged once
        stored = await store.get_reservation(reservation_id)
        assert stored is not None and stored.username == "alice"
    finally:
        await engine.dispose()
        await other.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "setting",
    [
        "lock_timeout = '200ms'",
        "statement_timeout = '200ms'",
        "default_transaction_read_only = on",  # a standby, as after a fail-over
    ],
)
async def test_a_statement_the_server_gives_up_on_is_the_database_busy(
    store_settings: StoreSettings, setting: str
) -> None:
    """A DBA's ``lock_timeout`` or ``statement_timeout`` (set for a role or a database) stops a
    deduction that waits on a row another session holds; a standby refuses the write. That is
    a database unable to do the work for now, as when our own transaction timeout runs out: a
    503 at the API, a message a worker holds (store.availability), not a failed statement (a
    500, a dead letter)."""
    locker = await open_engine(store_settings)
    engine = await open_engine(store_settings)

    @event.listens_for(engine.sync_engine, "connect")
    def set_it(dbapi_connection: Any, _: Any) -> None:
        # On the asyncpg connection itself: outside a transaction, for the whole session.
        dbapi_connection.run_async(lambda connection: connection.execute(f"SET {setting}"))

    await engine.dispose()  # the pool's connections opened before the listener
    try:
        async with locker.begin() as conn:
            await conn.execute(text("SELECT 1 FROM users WHERE username = 'alice' FOR UPDATE"))
            with pytest.raises(DBAPIError) as stopped:
                await SqlStore(engine).reserve(uuid.uuid4(), "alice", "book-1")
        assert database_gone(stopped.value) and database_busy(stopped.value), repr(stopped.value)
        assert await SqlStore(engine).get_credits("alice") == 100
    finally:
        await engine.dispose()
        await locker.dispose()


BOOK_2 = 25  # its price in store/seed.json
