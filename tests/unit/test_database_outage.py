"""A handler failure is held for the database only when the database, not the statement,
failed, and is no attempt if the database never answered; the held messages share one bounded
probe, which closing ends. A stand-in outage at the project's own port counts the waits; the
probe itself runs against a port where nothing listens (a real refusal)."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devtools.addresses import free_port
from messaging import delivery
from messaging.delivery import MAX_ATTEMPTS, Delivery
from messaging.handlers import NotAnAttempt
from store.availability import database_busy
from store.engine import DatabaseUnavailable
from workers.database_outage import BUSY_PAUSE, DatabaseOutage, Released, held_through


class CountingOutage(DatabaseOutage):
    def __init__(self, probe_takes: float = 0, answer: bool | None = True) -> None:
        super().__init__(cast(AsyncEngine, None))  # never probes: back() is replaced
        self.waits = 0
        self.pauses: list[float] = []
        self.probe_takes = probe_takes
        self.answer = answer

    async def back(self) -> bool | None:
        self.waits += 1
        await asyncio.sleep(self.probe_takes)
        return self.answer

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def failing(exc: Exception) -> Any:
    async def handler(_: object) -> None:
        raise exc

    return handler


def _timed_out() -> DatabaseUnavailable:
    try:
        raise DatabaseUnavailable("no answer within 5.0 s") from TimeoutError()
    except DatabaseUnavailable as exc:
        return exc


def _lost() -> OperationalError:
    return OperationalError("SELECT", {}, Exception("closed"), connection_invalidated=True)


@pytest.mark.parametrize(
    ("error", "held", "paused"),
    [
        (DatabaseUnavailable("refused"), True, False),
        (_lost(), True, False),
        (_timed_out(), True, True),
        (OperationalError("BEGIN", {}, Exception("database is locked")), True, True),
        (OperationalError("INSERT", {}, Exception("database or disk is full")), True, True),
        (PoolTimeout("QueuePool limit reached"), True, True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False, False),
        (ValueError("a bug"), False, False),
    ],
    ids=["refused", "lost", "timed-out", "locked", "full", "pool", "integrity", "bug"],
)
async def test_only_a_database_failure_waits_and_a_busy_one_is_then_no_attempt(
    error: Exception, held: bool, paused: bool
) -> None:
    """A database that answered the probe at once yet could not do the work (a lock held by
    another session, a full disk, a DBA's statement timeout) is paused for from the second
    attempt on, and is then no attempt: the message is held again, never parked (counted, a
    review's 50 ms statement_timeout under load dead-lettered 5 of 59 requests). A lost
    connection, which the pool replaces, is retried as soon as the probe answers, counted."""
    for attempt in (1, 2, MAX_ATTEMPTS):
        outage = CountingOutage()
        handler = held_through(outage, failing(error))
        token = delivery._current.set(Delivery(redelivered=False, attempt=attempt))
        held_again = paused and attempt > 1
        try:
            with pytest.raises(NotAnAttempt if held_again else type(error)) as raised:
                await handler(object())
        finally:
            delivery._current.reset(token)
        if held_again:
            assert raised.value.__cause__ is error
        assert outage.waits == (1 if held else 0)
        # Not on the first attempt: a transaction that ran out of time may have met a silent
        # connection, which is closed, and the retry goes through at once on another.
        assert len(outage.pauses) == (1 if held_again else 0)
        # Spread over the last quarter, so that what failed together comes back apart.
        assert all(0.75 * BUSY_PAUSE - 1 < seconds <= BUSY_PAUSE for seconds in outage.pauses)


async def test_a_probe_that_waited_out_the_pause_adds_none() -> None:
    """The pause counts from the failure: a probe that waited longer (the database went away
    and came back, or the pool stayed full) leaves nothing more to wait; still no attempt."""
    outage = CountingOutage(probe_takes=0.1)
    outage.busy_pause = 0.05
    token = delivery._current.set(Delivery(redelivered=False, attempt=2))
    try:
        with pytest.raises(NotAnAttempt):
            await held_through(outage, failing(_timed_out()))(object())
    finally:
        delivery._current.reset(token)
    assert (outage.waits, outage.pauses) == (1, [])


async def test_a_pause_ends_when_the_worker_stops() -> None:
    outage = DatabaseOutage(cast(AsyncEngine, None), busy_pause=30)
    pausing = asyncio.ensure_future(outage.pause(30))
    await asyncio.sleep(0.05)
    assert not pausing.done()
    outage.close()
    with pytest.raises(Released):
        await asyncio.wait_for(pausing, 5)


@pytest.mark.parametrize("attempt", [1, MAX_ATTEMPTS], ids=["first", "last"])
async def test_a_database_that_never_answered_makes_the_failure_no_attempt(attempt: int) -> None:
    """Unreachable all the while it was held: the message goes back as the same attempt (the
    last included: it used to be dead-lettered at once), to be held again, however long the
    outage lasts."""
    outage = CountingOutage(answer=False)
    token = delivery._current.set(Delivery(redelivered=True, attempt=attempt))
    try:
        with pytest.raises(NotAnAttempt, match="did not answer within 30 s") as raised:
            await held_through(outage, failing(DatabaseUnavailable("refused")))(object())
    finally:
        delivery._current.reset(token)
    assert isinstance(raised.value.__cause__, DatabaseUnavailable)
    assert outage.waits == 1


@pytest.mark.parametrize("answer", [True, None], ids=["back", "probe-failed"])
async def test_a_database_back_or_a_probe_that_failed_leaves_the_failure_counted(
    answer: bool | None,
) -> None:
    """Back: the failure may be the message's (a statement that breaks the connection) and
    counts, on the last attempt as on the others. A probe that failed (not a timeout) tells
    nothing: counted too, never a retry loop at the probe's pace."""
    outage = CountingOutage(answer=answer)
    token = delivery._current.set(Delivery(redelivered=True, attempt=MAX_ATTEMPTS))
    try:
        with pytest.raises(DatabaseUnavailable):  # itself, not a NotAnAttempt
            await held_through(outage, failing(DatabaseUnavailable("refused")))(object())
    finally:
        delivery._current.reset(token)
    assert outage.waits == 1


@pytest.fixture
async def nowhere() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    yield engine
    await engine.dispose()


async def test_the_probe_gives_up_at_its_bound(nowhere: AsyncEngine) -> None:
    assert await asyncio.wait_for(DatabaseOutage(nowhere, within=0.3).back(), 5) is False


async def test_held_messages_share_one_probe_and_closing_releases_them(
    nowhere: AsyncEngine,
) -> None:
    outage = DatabaseOutage(nowhere, within=30)
    held = [asyncio.ensure_future(outage.back()) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert outage._probe is not None and not outage._probe.done()
    assert not any(waiting.done() for waiting in held)
    outage.close()
    for waiting in held:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)
    assert await outage.back() is None  # closed: nothing is held any more


@pytest.mark.parametrize("attempt", [1, MAX_ATTEMPTS], ids=["first", "last"])
async def test_once_closed_a_database_failure_is_released_not_counted(attempt: int) -> None:
    """A stopping worker's handlers in flight that find the database gone give their message
    back unsettled (a cancellation the subscriber leaves unacked): no attempt used up, and on
    the last one no dead letter for a message with nothing wrong with it."""
    outage = CountingOutage()
    outage.close()
    token = delivery._current.set(Delivery(redelivered=attempt > 1, attempt=attempt))
    try:
        with pytest.raises(Released) as released:
            await held_through(outage, failing(DatabaseUnavailable("refused")))(object())
        assert isinstance(released.value, asyncio.CancelledError)
        with pytest.raises(IntegrityError):  # the statement's own failure is still counted
            error = IntegrityError("INSERT", {}, Exception("duplicate key"))
            await held_through(outage, failing(error))(object())
    finally:
        delivery._current.reset(token)
    assert outage.waits == 0


def _sqlite_error(code: int, message: str) -> OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code  # as the sqlite3 module sets it
    return OperationalError("INSERT", {}, error)


def test_only_sqlite_s_errors_of_the_moment_are_busy() -> None:
    """SQLite files "no such table" as an OperationalError too: held as busy, a message on a
    database not migrated would have come back for ever (a review's)."""
    with sqlite3.connect(":memory:") as conn, pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("SELECT * FROM nowhere")
    assert not database_busy(OperationalError("SELECT", {}, raised.value))
    of_the_moment = {
        5: "database is locked",
        6: "database table is locked",
        8: "attempt to write a readonly database",
        13: "database or disk is full",
        261: "database is locked",  # SQLITE_BUSY_RECOVERY, an extended code
    }
    for code, message in of_the_moment.items():
        assert database_busy(_sqlite_error(code, message)), message
