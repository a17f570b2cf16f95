"""The credit-check handler against a hand-written fake ledger (the project's own port)."""

import uuid
from uuid import UUID

import pytest

from domain.credits import decide
from domain.reservations import Outcome, Reservation
from messaging.messages import CreditChecked, ReservationConfirmed, ReservationRequested
from messaging.topology import RESERVATION_CONFIRMATIONS
from tests.logs import capture_logs_of
from workers.credit_check import handler
from workers.credit_check.handler import check_credit, credit_check


class FakeLedger:
    """Credits and prices in dicts; remembers each reservation like the real store does."""

    def __init__(self, credits: dict[str, int], prices: dict[str, int]) -> None:
        self.credits = credits
        self.prices = prices
        self.reserved: dict[UUID, Reservation] = {}

    async def reserve(
        self, reservation_id: UUID, username: str, item_id: str, trace_id: str | None = None
    ) -> Reservation:
        if reservation_id in self.reserved:
            return self.reserved[reservation_id].as_replayed()
        balance, price = self.credits.get(username), self.prices.get(item_id)
        outcome = decide(balance, price)  # the domain's rule, not a copy of it
        left, cost = balance, None if outcome is Outcome.UNKNOWN_USER else price
        if outcome is Outcome.CONFIRMED and balance is not None and price is not None:
            self.credits[username] = left = balance - price
        reservation = Reservation(
            reservation_id, username, item_id, outcome, cost, left, trace_id=trace_id
        )
        self.reserved[reservation_id] = reservation
        return reservation


def _request(username: str = "alice", item_id: str = "book") -> ReservationRequested:
    return ReservationRequested(reservation_id=uuid.uuid4(), username=username, item_id=item_id)


async def test_confirmed_reply_and_event() -> None:
    ledger = FakeLedger({"alice": 30}, {"book": 10})
    request = _request()
    decision = await check_credit(request, ledger)
    assert decision.reply.outcome is Outcome.CONFIRMED
    assert decision.reply.credits_left == 20
    assert decision.reply.reservation_id == request.reservation_id
    assert decision.event is not None
    assert (decision.event.username, decision.event.item_id, decision.event.price) == (
        "alice",
        "book",
        10,
    )


@pytest.mark.parametrize(
    ("username", "item_id", "outcome", "credits_left"),
    [
        ("alice", "course", Outcome.REJECTED_INSUFFICIENT_CREDITS, 30),
        ("nobody", "book", Outcome.UNKNOWN_USER, None),
        ("alice", "nothing", Outcome.UNKNOWN_ITEM, 30),
    ],
)
async def test_rejections_are_answers_without_event(
    username: str, item_id: str, outcome: Outcome, credits_left: int | None
) -> None:
    ledger = FakeLedger({"alice": 30}, {"book": 10, "course": 50})
    decision = await check_credit(_request(username, item_id), ledger)
    assert decision.reply.outcome is outcome
    assert decision.reply.credits_left == credits_left
    assert decision.event is None
    assert ledger.credits == {"alice": 30}


async def test_replay_returns_the_same_answer_and_still_announces() -> None:
    ledger = FakeLedger({"alice": 30}, {"book": 10})
    request = _request()
    first = await check_credit(request, ledger)
    second = await check_credit(request, ledger)
    assert second.reservation.replayed
    assert second.reply == first.reply
    assert second.event == first.event
    assert ledger.credits["alice"] == 20


async def test_a_request_reusing_an_id_for_another_user_or_item_announces_the_recorded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redelivered, a request names what it did the first time; a message that reuses a
    reservation id for another user or item (a review published one) got the stored answer
    but an event naming the new item, which the fulfilment worker then prepared."""
    said = capture_logs_of(monkeypatch, handler)
    ledger = FakeLedger({"alice": 30, "bob": 100}, {"book": 10, "course": 50})
    first = await check_credit(_request(), ledger)
    reused = ReservationRequested(
        reservation_id=first.reply.reservation_id, username="bob", item_id="course"
    )
    again = await check_credit(reused, ledger)
    assert again.reply == first.reply
    assert again.event == first.event
    assert again.event is not None and (again.event.username, again.event.item_id) == (
        "alice",
        "book",
    )
    assert ledger.credits == {"alice": 20, "bob": 100}
    [warning] = [line for line in said.entries if line["log_level"] == "warning"]
    assert (warning["item_id"], warning["requested_item_id"]) == ("book", "course")
    assert "bob" not in str(warning)  # a username identifies a person: never logged


async def test_the_worker_handler_returns_its_reply_and_the_event_to_publish() -> None:
    ledger = FakeLedger({"alice": 30}, {"book": 10, "course": 50})
    confirmed = await credit_check(ledger)(_request())
    assert confirmed is not None and isinstance(confirmed.reply, CreditChecked)
    assert confirmed.reply.outcome is Outcome.CONFIRMED
    assert [(e.to, type(e.message)) for e in confirmed.events] == [
        (RESERVATION_CONFIRMATIONS, ReservationConfirmed)
    ]
    rejected = await credit_check(ledger)(_request(item_id="course"))
    assert rejected is not None and isinstance(rejected.reply, CreditChecked)
    assert rejected.reply.outcome is Outcome.REJECTED_INSUFFICIENT_CREDITS
    assert rejected.events == ()
