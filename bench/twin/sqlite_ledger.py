"""The ledger on raw ``sqlite3``: one dedicated thread, one hop per transaction.

Every transaction runs start to end in one call on the ledger's own thread, so it costs one
thread hop, not one per statement as aiosqlite does. ``BEGIN IMMEDIATE`` takes the write lock
at the start (two deductions can never read the same balance); WAL and the busy timeout let
the fulfilment process write the same file; ``synchronous=NORMAL`` as the system sets it.
"""

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.twin import schema
from bench.twin.ledger import Decision, UnknownReservation

BUSY_TIMEOUT_S = 10.0
_SQL = schema.Sql(postgres=False)


class SqliteLedger:
    kind = "sqlite"

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._thread = thread

    @classmethod
    async def open(cls, path: str, seed_file: Path) -> "SqliteLedger":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(thread, _connect, path, seed_file)
        return cls(conn, thread)

    async def reserve(self, reservation_id: str, username: str, item_id: str) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread, _reserve, self._conn, reservation_id, username, item_id
        )

    async def prepare_download(self, reservation_id: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, _prepare, self._conn, reservation_id, token)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown()


def _connect(path: str, seed_file: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    users, items = schema.seed_rows(seed_file)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for ddl in schema.tables(postgres=False):
            conn.execute(ddl)
        conn.executemany(_SQL.seed_user, users)
        conn.executemany(_SQL.seed_item, items)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return conn


def _reserve(conn: sqlite3.Connection, rid: str, username: str, item_id: str) -> Decision:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(_SQL.deduct, (item_id, username, item_id, item_id)).fetchone()
        if row is not None:
            decision = Decision(schema.CONFIRMED, row[1], row[0])
        else:
            decision = _why_not(conn, username, item_id)
        conn.execute(
            _SQL.record,
            (rid, username, item_id, decision.outcome, decision.price, decision.credits_left),
        )
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        stored = conn.execute(_SQL.by_id, (rid,)).fetchone()
        if stored is None:
            raise
        return Decision(stored[0], stored[1], stored[2], replayed=True)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return decision


def _why_not(conn: sqlite3.Connection, username: str, item_id: str) -> Decision:
    current = conn.execute(_SQL.balance, (item_id, username)).fetchone()
    if current is None:
        return Decision(schema.UNKNOWN_USER, None, None)
    if current[1] is None:
        return Decision(schema.UNKNOWN_ITEM, None, current[0])
    return Decision(schema.REJECTED, current[1], current[0])


def _prepare(conn: sqlite3.Connection, rid: str, token: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(_SQL.prepare, (token, rid)).rowcount == 0:
            stored = conn.execute(_SQL.token, (rid,)).fetchone()
            if stored is None or stored[0] is None:
                raise UnknownReservation(f"no confirmed reservation {rid}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
