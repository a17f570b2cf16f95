"""The twin's port to its database: one transaction per call, whichever the driver.

``reserve`` is the credit check (see :mod:`bench.twin.schema`); ``prepare_download`` is the
fulfilment write. Both are idempotent by reservation id, like ``store.repository.SqlStore``.
"""

from dataclasses import dataclass
from typing import Protocol

from bench.twin.settings import TwinSettings


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str
    price: int | None
    credits_left: int | None
    replayed: bool = False


class UnknownReservation(LookupError):
    """A ``reservation.confirmed`` event names no confirmed reservation."""


class Ledger(Protocol):
    kind: str  # "sqlite" or "postgresql", for the transaction span

    async def reserve(self, reservation_id: str, username: str, item_id: str) -> Decision: ...

    async def prepare_download(self, reservation_id: str, token: str) -> None:
        """Record the token once; raises UnknownReservation if there is nothing to fulfil."""
        ...

    async def close(self) -> None: ...


async def open_ledger(settings: TwinSettings) -> Ledger:
    """Connect, create the tables if they are missing, and seed them."""
    if settings.is_sqlite:
        from bench.twin.sqlite_ledger import SqliteLedger

        return await SqliteLedger.open(settings.sqlite_path, settings.seed_file)
    from bench.twin.pg_ledger import PostgresLedger

    return await PostgresLedger.open(
        settings.postgres_dsn, settings.database_schema, settings.prefetch, settings.seed_file
    )
