"""A handler failure is held for the database only when the database, not the statement,
failed; a stand-in outage at the project's own port counts the waits."""

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from store.engine import DatabaseUnavailable
from workers.database_outage import DatabaseOutage, held_through


class CountingOutage(DatabaseOutage):
    def __init__(self) -> None:
        self.waits = 0

    async def back(self) -> bool:
        self.waits += 1
        return True


def failing(exc: Exception) -> Any:
    async def handler(_: object) -> None:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("error", "held"),
    [
        (DatabaseUnavailable("refused"), True),
        (OperationalError("BEGIN", {}, Exception("database is locked")), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("a bug"), False),
    ],
    ids=["unreachable", "operational", "integrity", "bug"],
)
async def test_only_a_database_failure_waits_and_every_failure_is_raised(
    error: Exception, held: bool
) -> None:
    outage = CountingOutage()
    handler = held_through(outage, failing(error))
    with pytest.raises(type(error)):
        await handler(object())
    assert outage.waits == (1 if held else 0)
