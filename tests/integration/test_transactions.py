"""How transactions reach the database (store/transactions.py, store/engine.py), on real SQLite
and PostgreSQL: a failed transaction leaves nothing behind, SQLite's write thread keeps its
connection and gives it back, and a pooled PostgreSQL connection that died while idle is
replaced before anyone uses it."""

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from store import engine as engine_module
from store import statements as sql
from store import transactions as transactions_module
from store.availability import database_busy, until_reachable
from store.driver import DriverStatements
from store.engine import (
    PING_AFTER_IDLE_S,
    DatabaseFileGone,
    DatabaseUnavailable,
    dispose,
    open_engine,
)
from store.failures import opened_read_only, sqlstate
from store.migrate import migrate
from store.settings import StoreSettings
from store.tables import users
from store.transactions import MAX_RUNS, ThreadedTransactions, transactions_for
from tests.hop import Hop
from tests.logs import capture_logs_of

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(store_settings: StoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(store_settings)
    yield engine
    await engine.dispose()


def _credits(conn: Connection) -> int:
    return int(conn.scalar(text("SELECT credits FROM users WHERE username = 'alice'")))


def _backend_pid(conn: Connection) -> int:
    return int(conn.scalar(text("SELECT pg_backend_pid()")))


async def test_a_failed_write_leaves_nothing_and_the_next_one_runs(engine: AsyncEngine) -> None:
    transactions = transactions_for(engine)

    def spend_then_fail(conn: Connection) -> None:
        conn.execute(update(users).where(users.c.username == "alice").values(credits=0))
        raise RuntimeError("the handler failed mid-transaction")

    with pytest.raises(RuntimeError):
        await transactions.write(spend_then_fail)
    assert await transactions.read(_credits) == 100

    assert await transactions.write(_spend_one) == 99
    assert await transactions.write(_spend_one) == 98
    assert await transactions.read(_credits) == 98


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("condition", "code", "runs"),
    [
        ("deadlock_detected", "40P01", MAX_RUNS),
        ("serialization_failure", "40001", MAX_RUNS),
        ("lock_not_available", "55P03", 1),
        ("unique_violation", "23505", 1),
    ],
)
async def test_only_a_transaction_rolled_back_for_another_runs_again_and_at_most_max_runs(
    engine: AsyncEngine, condition: str, code: str, runs: int
) -> None:
    """PostgreSQL raises each condition for real, after a write: a deadlock or serialization
    failure runs the transaction again, MAX_RUNS times in all, then fails as the database busy;
    anything else fails at once. No run leaves its write behind."""
    transactions = transactions_for(engine)
    ran = 0

    def spend_then_fail(conn: Connection) -> None:
        nonlocal ran
        ran += 1
        conn.execute(update(users).where(users.c.username == "alice").values(credits=0))
        conn.execute(
            text(f"DO $$ BEGIN RAISE EXCEPTION 'staged' USING ERRCODE = '{condition}'; END $$")
        )

    with pytest.raises(DBAPIError) as failed:
        await transactions.write(spend_then_fail)
    assert (ran, sqlstate(failed.value)) == (runs, code)
    assert await transactions.read(_credits) == 100


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_sqlite_writes_keep_one_connection_and_give_it_back_on_dispose(
    store_settings: StoreSettings,
) -> None:
    engine = await open_engine(store_settings)
    transactions = transactions_for(engine)
    assert isinstance(transactions, ThreadedTransactions)
    pool = transactions.engine.pool
    assert isinstance(pool, QueuePool)  # SQLAlchemy's pool for a SQLite file
    for _ in range(3):
        await transactions.write(_credits)
    assert pool.checkedout() == 1  # the write thread's, kept between transactions
    await engine.dispose()
    assert pool.checkedout() == 0
    # Like the engine, the store stays usable after a dispose: the next write connects again.
    assert await transactions.write(_credits) == 100
    await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_sqlite_connections_that_cannot_write_are_replaced_after_one_failure(
    store_settings: StoreSettings,
) -> None:
    """SQLite opens a file that it may not write at that moment read-only, silently, and the
    connection stays so: in a fault campaign, connections opened while the file was read-only
    failed every write after it was writable again (96 requests dead-lettered) until the
    services restarted. ``PRAGMA query_only`` makes pooled connections fail the same way."""
    engine = await open_engine(store_settings)
    try:
        transactions = transactions_for(engine)
        assert isinstance(transactions, ThreadedTransactions)
        pooled = [transactions.engine.connect() for _ in range(3)]
        for conn in pooled:
            conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.close()  # back to the pool, unable to write

        with pytest.raises(DBAPIError, match="readonly") as failed:
            await transactions.write(_spend_one)
        assert opened_read_only(failed.value)
        for left in (99, 98, 97):
            assert await transactions.write(_spend_one) == left
        assert await transactions.read(_credits) == 97
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_a_sqlite_file_deleted_under_the_store_holds_writes_until_it_is_back(
    store_settings: StoreSettings,
) -> None:
    """Deleted under the running services, the file lived on for their connections, and every
    write went on to it, answered and then lost (a review's: the worker then refused to start,
    and after a migrate the old API still read the lost rows). Now a write or read fails as the
    database busy (a worker holds its message, the API answers 503) until the file is back, and
    goes on in the new one."""
    engine = await open_engine(store_settings)
    try:
        transactions = transactions_for(engine)
        assert isinstance(transactions, ThreadedTransactions)
        assert await transactions.write(_spend_one) == 99
        database = Path(str(make_url(store_settings.database_url.get_secret_value()).database))
        for name in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            name.unlink(missing_ok=True)
        for attempt in (transactions.write(_spend_one), transactions.read(_credits)):
            with pytest.raises(DatabaseFileGone) as gone:
                await attempt
            assert database_busy(gone.value)
        await migrate(store_settings)  # a new file, seeded afresh
        # A read sees the new file first: the write thread's kept connection, to the old one,
        # must not take the next write (a review's: written there, and lost).
        assert await transactions.read(_credits) == 100
        assert await transactions.write(_spend_one) == 99
        assert await transactions.read(_credits) == 99
        with sqlite3.connect(database) as other:  # the write is in the file at the path
            (credits,) = other.execute(
                "SELECT credits FROM users WHERE username = 'alice'"
            ).fetchone()
        assert credits == 99
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_sqlite_writes_queued_at_release_fail_at_once(
    store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service stopping while another process holds the file's lock waited, on its event
    loop, for every queued write to run out of the busy timeout in turn (a fault campaign's
    worker, with 64 requests in flight, was still there after 60 s). Now only the write in
    progress is waited for; the ones behind it fail at once, and their messages are redelivered."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 1_000)
    engine = await open_engine(store_settings)
    try:
        transactions = transactions_for(engine)
        assert isinstance(transactions, ThreadedTransactions)
        database = make_url(store_settings.database_url.get_secret_value()).database
        holder = sqlite3.connect(str(database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        try:
            queued = [asyncio.ensure_future(transactions.write(_spend_one)) for _ in range(4)]
            await asyncio.sleep(0.2)  # the first waits on the lock, three are queued behind it
            await asyncio.to_thread(transactions.release)
            outcomes = await asyncio.gather(*queued, return_exceptions=True)
        finally:
            holder.rollback()
            holder.close()
        assert isinstance(outcomes[0], DBAPIError)  # locked past the busy timeout
        # Failed without waiting on the lock: each would have been "database is locked" after
        # 1 s, in turn.
        assert all(isinstance(outcome, DatabaseUnavailable) for outcome in outcomes[1:]), outcomes
        assert await transactions.write(_spend_one) == 99  # the store stays usable
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_sqlite_writes_queued_behind_a_locked_file_give_up_within_the_busy_timeout(
    store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The busy timeout counts from when a write was asked for, its turn in the queue
    included: with another process holding the lock, each queued write waited out the whole
    timeout in turn (a review's keyed reservations behind a 50 s lock: one 503 per 10 s, the
    rest held up to 48 s)."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 1_000)
    engine = await open_engine(store_settings)
    try:
        transactions = transactions_for(engine)
        database = make_url(store_settings.database_url.get_secret_value()).database
        holder = sqlite3.connect(str(database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def timed() -> tuple[float, BaseException | int]:
            try:
                outcome: BaseException | int = await transactions.write(_spend_one)
            except (DBAPIError, DatabaseUnavailable) as exc:
                outcome = exc
            return loop.time() - started, outcome

        try:
            outcomes = await asyncio.gather(*(timed() for _ in range(5)))
            holder.rollback()
            failures = [outcome for _, outcome in outcomes if isinstance(outcome, Exception)]
            assert len(failures) == len(outcomes), outcomes
            assert max(took for took, _ in outcomes) < 2.0, outcomes  # not 1, 2, 3, 4, 5 s
            # Failed as a busy database does: a worker holds the message, never parks it.
            assert all(database_busy(failure) for failure in failures), outcomes
            # One that waited half its timeout in the queue gets the other half, and fails
            # with it; the shortened busy timeout must not stay with its connection: each
            # later write, on whichever connection, waits out a lock of 0.7 s (a review's: a
            # pooled connection kept 99 ms and failed one).
            holder.execute("BEGIN IMMEDIATE")
            first = asyncio.ensure_future(timed())
            await asyncio.sleep(0.5)
            second = await timed()
            assert isinstance((await first)[1], Exception) and isinstance(second[1], Exception)
            holder.rollback()
            for left in (99, 98, 97):
                holder.execute("BEGIN IMMEDIATE")
                loop.call_later(0.7, holder.rollback)
                assert await transactions.write(_spend_one) == left
        finally:
            if holder.in_transaction:
                holder.rollback()
            holder.close()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_postgres_connection_killed_while_idle_is_replaced_before_use(
    store_settings: StoreSettings, postgres_url: str
) -> None:
    engine = await open_engine(store_settings)
    admin = create_async_engine(postgres_url)
    try:
        transactions = transactions_for(engine)
        pid = await transactions.read(_backend_pid)
        async with admin.connect() as conn:
            killed = await conn.scalar(text(f"SELECT pg_terminate_backend({pid})"))
        assert killed
        await asyncio.sleep(PING_AFTER_IDLE_S + 0.2)
        # Without the ping at checkout, this would fail on the dead connection.
        assert await transactions.read(_credits) == 100
        assert await transactions.read(_backend_pid) != pid
    finally:
        await admin.dispose()
        await engine.dispose()


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["read", "write"])
async def test_a_silent_postgres_connection_is_abandoned_after_the_timeout(
    behind_a_hop: tuple[Hop, StoreSettings], kind: str
) -> None:
    """A pooled connection whose server went silent (its connections after a fail-over, or a
    network that drops packets) raises nothing by itself: the statement would wait for ever.
    The transaction gives up after DATABASE_TRANSACTION_TIMEOUT, closes that connection, and
    the next one opens a new one."""
    hop, settings = behind_a_hop
    async with _engine(settings, {"database_transaction_timeout": 0.5}) as engine:
        transactions = transactions_for(engine)
        assert await transactions.read(_credits) == 100
        hop.freeze(new_connections=False)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"no answer within 0\.5 s"):
            await (
                transactions.write(_spend_one) if kind == "write" else transactions.read(_credits)
            )
        # Bounded (not a speed check): the timeout, then up to 2 s for SQLAlchemy's graceful
        # close of the connection.
        assert time.monotonic() - started < 10
        assert await transactions.read(_credits) == 100  # a new connection; nothing was spent


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_silent_idle_postgres_connection_is_replaced_before_use(
    behind_a_hop: tuple[Hop, StoreSettings],
) -> None:
    """A connection that sat idle is pinged at checkout; a silent one fails the ping's own
    bound (1 s), is closed and replaced: the transaction runs on a new connection instead
    of waiting on the old one."""
    hop, settings = behind_a_hop
    async with _engine(settings, {"database_transaction_timeout": 4.0}) as engine:
        transactions = transactions_for(engine)
        first = await transactions.read(_backend_pid)
        await asyncio.sleep(PING_AFTER_IDLE_S + 0.2)
        hop.freeze(new_connections=False)
        # Without the ping's own bound, this would wait on the silent connection and time out.
        assert await transactions.read(_backend_pid) != first


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_the_outage_probe_gets_past_silent_pooled_connections(
    behind_a_hop: tuple[Hop, StoreSettings],
) -> None:
    """``until_reachable`` (the worker's outage probe) abandons a try on a silent pooled
    connection after the transaction timeout, as a transaction does, instead of waiting on it
    for its whole bound."""
    hop, settings = behind_a_hop
    async with _engine(settings, {"database_transaction_timeout": 0.5}) as engine:
        transactions = transactions_for(engine)
        sleepers = [transactions.read(_sleep_briefly) for _ in range(2)]
        await asyncio.gather(*sleepers)  # two connections in the pool
        hop.freeze(new_connections=False)
        assert await until_reachable(engine, within=10)


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_dispose_gives_up_on_a_silent_server_with_one_warning(
    behind_a_hop: tuple[Hop, StoreSettings], caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while the database is silent: closing a pooled connection waits for an answer
    that never comes. ``dispose`` gives up at the transaction timeout with one WARNING; the
    close it cut short is not logged again as an ERROR with a traceback (SQLAlchemy's pool
    logs one for any failed close)."""
    hop, settings = behind_a_hop
    engine = await open_engine(settings.model_copy(update={"database_transaction_timeout": 0.5}))
    await asyncio.gather(*(transactions_for(engine).read(_sleep_briefly) for _ in range(2)))
    hop.freeze()
    caplog.set_level(logging.WARNING)
    async with asyncio.timeout(10):  # the failure this is about: a stop that hangs
        await dispose(engine)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "store.engine",
            "WARNING",
            "the database did not answer; its connections were left to close on exit",
        )
    ]


@asynccontextmanager
async def _engine(settings: StoreSettings, bounds: dict[str, float]) -> AsyncIterator[AsyncEngine]:
    engine = await open_engine(settings.model_copy(update=bounds))
    try:
        yield engine
    finally:
        await dispose(engine)


def _spend_one(conn: Connection) -> int:
    conn.execute(
        update(users).where(users.c.username == "alice").values(credits=users.c.credits - 1)
    )
    return _credits(conn)


def _sleep_briefly(conn: Connection) -> None:
    conn.execute(text("SELECT pg_sleep(0.1)"))


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_after_a_fail_over_only_the_first_transaction_waits_out_the_timeout(
    behind_a_hop: tuple[Hop, StoreSettings],
) -> None:
    """Every pooled connection silent for good, new ones answered (a fail-over, or a firewall
    that forgot idle connections): the first transaction times out on its connection; that
    puts the others in doubt, and each later checkout's ping finds its silent connection
    within the ping's bound and replaces it, so every later transaction runs."""
    hop, settings = behind_a_hop
    bounds = {"database_transaction_timeout": 4.0, "database_pool_size": 4}
    async with _engine(settings, bounds) as engine:
        transactions = transactions_for(engine)
        await asyncio.gather(*(transactions.read(_sleep_briefly) for _ in range(4)))
        hop.freeze(new_connections=False)
        with pytest.raises(DatabaseUnavailable):
            await transactions.read(_credits)
        for _ in range(4):  # without the doubt, each would time out on a silent connection
            assert await transactions.read(_credits) == 100


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_close_stuck_on_a_silent_server_gives_its_pool_slot_back(
    behind_a_hop: tuple[Hop, StoreSettings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read's transaction is rolled back when its connection goes back to the pool. A server
    gone silent after the read's SELECT answered (a fail-over) leaves that ROLLBACK waiting for
    ever, and the pool slot with it. At the transaction's deadline the connection is closed
    under it; only that one is discarded (SQLAlchemy's own path would recycle the others, each
    with a graceful close that waits 2 s on its silent server, past the timeout), and each
    later transaction's ping replaces its silent connection."""
    logged = capture_logs_of(monkeypatch, transactions_module)
    hop, settings = behind_a_hop
    bounds = {"database_transaction_timeout": 1.5, "database_pool_size": 3}
    async with _engine(settings, bounds) as engine:
        transactions = transactions_for(engine)
        await asyncio.gather(*(transactions.read(_sleep_briefly) for _ in range(3)))

        def read_then_fail_over(conn: Connection) -> int:
            credits = _credits(conn)
            hop.freeze(new_connections=False)
            return credits

        with pytest.raises(DatabaseUnavailable):  # the close outlasted the transaction's bound
            await transactions.read(read_then_fail_over)
        for _ in range(3):
            assert await transactions.read(_credits) == 100
    assert [e["event"] for e in logged.entries] == [
        "closing a database connection that did not answer in time"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no pool traceback


@pytest.mark.parametrize("empty_store_settings", ["postgresql"], indirect=True)
async def test_a_hot_statement_cancelled_on_a_silent_server_closes_its_connection(
    behind_a_hop: tuple[Hop, StoreSettings],
) -> None:
    """The hot statements run on the driver's cursor (store/driver.py). One cancelled by the
    timeout on a silent server must close its connection, as SQLAlchemy's own path does:
    otherwise the transaction's ROLLBACK waits for ever on the same server."""
    hop, settings = behind_a_hop
    async with _engine(settings, {"database_transaction_timeout": 1.0}) as engine:
        transactions, driver = transactions_for(engine), DriverStatements()

        def read_then_deduct(conn: Connection) -> object:
            _credits(conn)
            hop.freeze(new_connections=False)
            return driver.first(conn, sql.DEDUCT, {"p_username": "alice", "p_item_id": "book-1"})

        async with asyncio.timeout(20):  # the failure this test is about: a hang
            with pytest.raises(DatabaseUnavailable):
                await transactions.write(read_then_deduct)
            assert await transactions.read(_credits) == 100  # nothing was spent
