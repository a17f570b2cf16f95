"""The ledger on raw ``asyncpg``: a pool as large as the prefetch, prepared statements.

asyncpg prepares and caches each statement per connection, so the hot path sends only
parameters. The pool grows to ``AMQP_PREFETCH`` connections: every delivery the broker may
hand over at once finds a connection, none is opened per transaction.
"""

from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.twin import schema
from bench.twin.ledger import Decision, UnknownReservation

_SQL = schema.Sql(postgres=True)
SETUP_ATTEMPTS = 5


class PostgresLedger:
    kind = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, db_schema: str | None, size: int, seed_file: Path
    ) -> "PostgresLedger":
        settings = {"search_path": db_schema} if db_schema else {}
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, server_settings=settings)
        try:
            await _set_up(pool, seed_file)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def reserve(self, reservation_id: str, username: str, item_id: str) -> Decision:
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(_SQL.deduct, item_id, username)
                    if row is not None:
                        decision = Decision(schema.CONFIRMED, row[1], row[0])
                    else:
                        decision = await _why_not(conn, username, item_id)
                    await conn.execute(
                        _SQL.record,
                        reservation_id,
                        username,
                        item_id,
                        decision.outcome,
                        decision.price,
                        decision.credits_left,
                    )
            except asyncpg.UniqueViolationError:
                stored = await conn.fetchrow(_SQL.by_id, reservation_id)
                if stored is None:
                    raise
                return Decision(stored[0], stored[1], stored[2], replayed=True)
        return decision

    async def prepare_download(self, reservation_id: str, token: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(_SQL.prepare, token, reservation_id)
            if status == "UPDATE 0":
                stored = await conn.fetchval(_SQL.token, reservation_id)
                if stored is None:
                    raise UnknownReservation(f"no confirmed reservation {reservation_id}")

    async def close(self) -> None:
        await self._pool.close()


async def _why_not(conn: asyncpg.Connection, username: str, item_id: str) -> Decision:
    current = await conn.fetchrow(_SQL.balance, item_id, username)
    if current is None:
        return Decision(schema.UNKNOWN_USER, None, None)
    if current[1] is None:
        return Decision(schema.UNKNOWN_ITEM, None, current[0])
    return Decision(schema.REJECTED, current[1], current[0])


async def _set_up(pool: asyncpg.Pool, seed_file: Path) -> None:
    """Create and seed the tables; processes starting together may race on CREATE TABLE, so
    a failed attempt is retried."""
    users, items = schema.seed_rows(seed_file)
    for attempt in range(SETUP_ATTEMPTS):
        try:
            async with pool.acquire() as conn, conn.transaction():
                for ddl in schema.tables(postgres=True):
                    await conn.execute(ddl)
                await conn.executemany(_SQL.seed_user, users)
                await conn.executemany(_SQL.seed_item, items)
            return
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateObjectError):
            if attempt == SETUP_ATTEMPTS - 1:
                raise
