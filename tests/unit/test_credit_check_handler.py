"""The credit-check handler against a hand-written fake ledger (the project's own port)."""

import uuid
from uuid import UUID

import pytest

from messaging.messages import Outcome, ReservationRequested
from store.repository import Reservation
from workers.credit_check.handler import check_credit


class FakeLedger:
    """Credits and prices in dicts; remembers each reservation like the real store does."""

    def __init__(self, credits: dict[str, int], prices: dict[str, int]) -> None:
        self.credits = credits
        self.prices = prices
        self.reserved: dict[UUID, Reservation] = {}

    async def reserve(self, reservation_id: UUID, username: str, item_id: str) -> Reservation:
        if reservation_id in self.reserved:
            previous = self.reserved[reservation_id]
            return Reservation(**{**previous.__dict__, "replayed": True})
        price = self.prices.get(item_id)
        balance = self.credits.get(username)
        if balance is None:
            outcome, left, cost = Outcome.UNKNOWN_USER, None, None
        elif price is None:
            outcome, left, cost = Outcome.UNKNOWN_ITEM, balance, None
        elif balance >= price:
            self.credits[username] = left = balance - price
            outcome, cost = Outcome.CONFIRMED, price
        else:
            outcome, left, cost = Outcome.REJECTED_INSUFFICIENT_CREDITS, balance, price
        reservation = Reservation(reservation_id, username, item_id, outcome, cost, left)
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
