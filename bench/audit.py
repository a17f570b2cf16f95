"""What the database says after a level: nothing charged twice, nothing lost, all fulfilled.

The system and the twin share the table layout (``store.tables``), so one audit serves both.
Conservation: the credits taken from the users equal the sum of the confirmed reservations'
prices; fulfilment: every confirmed reservation has its download token.
"""

import sqlite3
from dataclasses import dataclass
from typing import Any

from bench import db
from devtools.waiting import poll_async

_TOTALS = (
    "SELECT (SELECT count(*) FROM users), (SELECT sum(credits) FROM users), "
    "(SELECT count(*) FROM reservations), "
    "(SELECT count(*) FROM reservations WHERE outcome = 'confirmed'), "
    "(SELECT coalesce(sum(price), 0) FROM reservations WHERE outcome = 'confirmed'), "
    "(SELECT count(*) FROM reservations WHERE download_token IS NOT NULL)"
)


@dataclass(frozen=True)
class Audit:
    recorded: int
    confirmed: int
    deducted: int  # credits taken from the users
    charged: int  # sum of the confirmed prices
    fulfilled: int

    @property
    def conserved(self) -> bool:
        return self.deducted == self.charged

    @property
    def all_fulfilled(self) -> bool:
        return self.fulfilled == self.confirmed

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "conserved": self.conserved,
            "all_fulfilled": self.all_fulfilled,
        }


async def audit(database: db.Database) -> Audit:
    if database.sqlite_path is not None:
        with sqlite3.connect(database.sqlite_path, timeout=10) as conn:
            row = conn.execute(_TOTALS).fetchone()
    else:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(
            db.asyncpg_dsn(database.url), server_settings={"search_path": database.schema or ""}
        )
        try:
            row = await conn.fetchrow(_TOTALS)
        finally:
            await conn.close()
    users, credits, recorded, confirmed, charged, fulfilled = row
    return Audit(
        recorded=int(recorded),
        confirmed=int(confirmed),
        deducted=int(users) * db.CREDITS - int(credits or 0),
        charged=int(charged),
        fulfilled=int(fulfilled),
    )


async def settled_audit(database: db.Database, within: float = 30) -> Audit:
    """The audit once every confirmed reservation is fulfilled (the fulfilment worker trails
    the replies), or after ``within`` seconds."""
    return await poll_async(
        lambda: audit(database), until=lambda a: a.all_fulfilled, within=within, every=0.5
    )
