"""The background republisher, with a hand-written fake at the publisher port: it keeps
trying until a copy is confirmed, and says so with an ERROR when it gives up."""

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


async def test_gives_up_with_an_error_naming_the_request() -> None:
    publisher = FlakyPublisher(failures=10**6)
    keeper = Republisher(publisher, always_ready, keep_trying_for=0.3)  # type: ignore[arg-type]
    request = _request()
    with capture_logs() as logs:
        keeper.keep_trying(request, RESERVATION_REQUESTS)
        await _finished(keeper)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["message_id"] for e in errors] == [str(request.reservation_id)], logs
    assert publisher.confirmed == []


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
