"""How transactions reach the database (store/transactions.py, store/engine.py), on real SQLite
and PostgreSQL: a failed transaction leaves nothing behind, SQLite's write thread keeps its
connection and gives it back, and a pooled PostgreSQL connection that died while idle is
replaced before anyone uses it."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from store.engine import PING_AFTER_IDLE_S, open_engine
from store.settings import StoreSettings
from store.tables import users
from store.transactions import ThreadedTransactions, transactions_for

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

    def spend_one(conn: Connection) -> int:
        conn.execute(
            update(users).where(users.c.username == "alice").values(credits=users.c.credits - 1)
        )
        return _credits(conn)

    assert await transactions.write(spend_one) == 99
    assert await transactions.write(spend_one) == 98
    assert await transactions.read(_credits) == 98


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
