"""The credit rule as a plain function: the same rule the store applies in SQL."""

import pytest

from domain.credits import decide
from domain.reservations import Outcome


@pytest.mark.parametrize(
    ("credits", "price", "outcome"),
    [
        (10, 10, Outcome.CONFIRMED),
        (11, 10, Outcome.CONFIRMED),
        (0, 0, Outcome.CONFIRMED),
        (9, 10, Outcome.REJECTED_INSUFFICIENT_CREDITS),
        (None, 10, Outcome.UNKNOWN_USER),
        (None, None, Outcome.UNKNOWN_USER),
        (10, None, Outcome.UNKNOWN_ITEM),
    ],
)
def test_decide(credits: int | None, price: int | None, outcome: Outcome) -> None:
    assert decide(credits, price) is outcome
