"""The background republisher, with a hand-written fake at the publisher port: it keeps
trying until a copy is confirmed, however long that takes, holds a bounded number of requests,
and says so with an ERROR for each it gives up on when it closes."""

import asyncio
import uuid
from typing import Any

from structlog.testing import capture_logs

from messaging import republisher
from messaging.messages import ReservationRequested
from messaging.republisher import Republisher
from messaging.topology import RESERVATION_REQUESTS, Route
from tests.waiting import eventually_async


class FlakyPublisher:
    """Fails the first ``failures`` publishes as a broken connection would, then confirms."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.confirmed: list[tuple[Any, Route]] = []
        self.attempts = 0

    async def publish(self, message: Any, to: Route, **_: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("connection reset mid-confirm")
        self.confirmed.append((message, to))


async def always_ready(_: float) -> bool:
    return True


async def _finished(keeper: Republisher) -> None:
    async for attempt in eventually_async(5, every=0.01):
        with attempt:
            assert keeper.in_progress == 0


def _request() -> ReservationRequested:
    return ReservationRequested(reservation_id=uuid.uuid4(), username="a", item_id="b")


async def test_republishes_until_one_copy_is_confirmed(monkeypatch: Any) -> None:
    monkeypatch.setattr(republisher, "FIRST_PAUSE", 0.01)
    publisher = FlakyPublisher(failures=3)
    keeper = Republisher(publisher, always_ready)  # type: ignore[arg-type]
    request = _request()
    with capture_logs() as logs:
        keeper.keep_trying(request, RESERVATION_REQUESTS)
        await _finished(keeper)
    assert publisher.confirmed == [(request, RESERVATION_REQUESTS)]
    assert publisher.attempts == 4
    assert not [e for e in logs if e["log_level"] == "error"], logs


class StalledBroker:
    """Takes no copy while ``blocked`` (a broker blocking publishers: a publish waits for a
    confirm until its deadline, then times out), and confirms the one in flight once it is
    unblocked."""

    def __init__(self) -> None:
        self.unblocked = asyncio.Event()
        self.attempts = 0
        self.confirmed: list[Any] = []

    async def publish(self, message: Any, to: Route, *, deadline: float, **_: Any) -> None:
        self.attempts += 1
        async with asyncio.timeout_at(deadline):
            await self.unblocked.wait()
        self.confirmed.append(message)


async def test_keeps_trying_however_long_the_broker_stays_away(monkeypatch: Any) -> None:
    """It used to give up after 120 s: a 202 that never resolved, for an alarm that lasted
    longer. Now the copies only space out (scaled down here: 1.5 s of a blocked broker, an
    attempt's wait at least 0.1 s)."""
    monkeypatch.setattr(republisher, "ATTEMPT_WITHIN", 0.1)
    monkeypatch.setattr(republisher, "FIRST_PAUSE", 0.01)
    monkeypatch.setattr(republisher, "MAX_PAUSE", 0.01)
    broker = StalledBroker()
    keeper = Republisher(broker, always_ready)  # type: ignore[arg-type]
    request = _request()
    with capture_logs() as logs:
        keeper.keep_trying(request, RESERVATION_REQUESTS)
        await asyncio.sleep(1.5)
        assert keeper.in_progress == 1
        # Each attempt waits as long as the request has been held: 0.1, 0.11, 0.23, 0.47 s...
        # five copies at most in 1.5 s, where a fixed 0.1 s wait would have sent fourteen.
        assert 2 <= broker.attempts <= 5, broker.attempts
        broker.unblocked.set()
        await _finished(keeper)
    assert broker.confirmed == [request]
    assert not [e for e in logs if e["log_level"] == "error"], logs
    confirmed = [e for e in logs if e["event"] == "unconfirmed request republished and confirmed"]
    assert [e["message_id"] for e in confirmed] == [str(request.reservation_id)], logs


async def test_a_full_republisher_has_room_again_once_a_request_is_confirmed(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(republisher, "HOLD_AT_MOST", 2)
    broker = StalledBroker()
    keeper = Republisher(broker, always_ready)  # type: ignore[arg-type]
    keeper.keep_trying(_request(), RESERVATION_REQUESTS)
    assert not keeper.full
    keeper.keep_trying(_request(), RESERVATION_REQUESTS)
    assert keeper.full
    broker.unblocked.set()
    await _finished(keeper)
    assert not keeper.full
    assert len(broker.confirmed) == 2


async def test_close_gives_up_on_what_is_still_trying() -> None:
    keeper = Republisher(FlakyPublisher(failures=10**6), always_ready)  # type: ignore[arg-type]
    request = _request()
    with capture_logs() as logs:
        keeper.keep_trying(request, RESERVATION_REQUESTS)
        await keeper.close(within=0.1)
    assert keeper.in_progress == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["message_id"] for e in errors] == [str(request.reservation_id)], logs


class BuggyPublisher:
    """Fails as a bug would, not as a broken connection."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, message: Any, to: Route, **_: Any) -> None:
        self.attempts += 1
        raise TypeError("not a connection problem")


async def test_a_bug_is_not_retried_and_its_error_names_the_request() -> None:
    publisher = BuggyPublisher()
    keeper = Republisher(publisher, always_ready)  # type: ignore[arg-type]
    request = _request()
    with capture_logs() as logs:
        keeper.keep_trying(request, RESERVATION_REQUESTS)
        await _finished(keeper)
    assert publisher.attempts == 1
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["message_id"] for e in errors] == [str(request.reservation_id)], logs
    assert "TypeError('not a connection problem')" in errors[0]["error"]
