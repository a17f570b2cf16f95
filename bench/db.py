"""A fresh database per scenario, seeded so every reservation is confirmed.

SQLite (default): a new file in the scenario's temporary directory. PostgreSQL
(``--db postgres``): a throwaway schema, passed to the services as ``DATABASE_SCHEMA`` and
dropped at the end. Either way the seed gives :data:`USERS` users 10^9 credits each and one
item that costs 1, written to a JSON file that ``python -m store.migrate`` reads through
``SEED_FILE`` before the services start.
"""

import asyncio
import json
import sqlite3
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools.waiting import poll_async

USERS = 64
CREDITS = 10**9
ITEM_ID = "bench-item"


def write_seed(directory: Path) -> Path:
    path = directory / "seed.json"
    data = {"users": {f"bench-{i}": CREDITS for i in range(USERS)}, "items": {ITEM_ID: 1}}
    path.write_text(json.dumps(data))
    return path


@dataclass
class Database:
    kind: str  # "sqlite" or "postgres"
    url: str  # DATABASE_URL for the services
    schema: str | None = None
    sqlite_path: Path | None = None

    def env(self) -> dict[str, str]:
        env = {"DATABASE_URL": self.url}
        if self.schema:
            env["DATABASE_SCHEMA"] = self.schema
        return env

    async def outcomes(self) -> dict[str, int]:
        """Reservations recorded so far, by outcome (empty before the schema exists)."""
        query = "SELECT outcome, count(*) FROM reservations GROUP BY outcome"
        if self.sqlite_path is not None:
            if not self.sqlite_path.exists():
                return {}
            with sqlite3.connect(self.sqlite_path, timeout=10) as conn:
                try:
                    return {str(o): int(n) for o, n in conn.execute(query)}
                except sqlite3.OperationalError:
                    return {}
        import asyncpg  # type: ignore[import-untyped]  # only with --db postgres

        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            rows = await conn.fetch(query.replace("reservations", f"{self.schema}.reservations"))
        except asyncpg.UndefinedTableError:
            return {}
        finally:
            await conn.close()
        return {str(row[0]): int(row[1]) for row in rows}

    async def settled_outcomes(self, within: float = 30) -> dict[str, int]:
        """:meth:`outcomes` once two reads half a second apart agree (prefetched deliveries
        finish), or after ``within`` seconds."""
        seen: list[dict[str, int]] = []

        async def read() -> list[dict[str, int]]:
            seen.append(await self.outcomes())
            return seen

        await poll_async(
            read, until=lambda s: len(s) > 1 and s[-1] == s[-2], within=within, every=0.5
        )
        return seen[-1]

    async def drop(self) -> None:
        if self.schema is None:
            return
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        finally:
            await conn.close()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create(kind: str, directory: Path, postgres_url: str) -> Database:
    if kind == "sqlite":
        path = directory / "bench.db"
        return Database("sqlite", f"sqlite+aiosqlite:///{path}", sqlite_path=path)
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return Database("postgres", postgres_url, schema=schema)


async def migrate(source_root: Path, env: Mapping[str, str], log_dir: Path) -> None:
    """Create and seed the tables as every deployment does, before any service starts (older
    trees have no ``store/migrate.py``: their services create the tables themselves)."""
    if not (source_root / "store" / "migrate.py").is_file():
        return
    log_path = log_dir / "migrate.log"
    with log_path.open("ab") as log:
        step = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "store.migrate",
            cwd=source_root,
            env=dict(env),
            stdout=log,
            stderr=log,
        )
    if await asyncio.wait_for(step.wait(), 60) != 0:
        raise RuntimeError(f"store.migrate failed:\n{log_path.read_text(errors='replace')[-4000:]}")
