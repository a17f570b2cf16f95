"""The credit rule: a reservation is confirmed when the user can pay the item's price.

The store applies it atomically in SQL (``UPDATE ... WHERE credits >= price``), so concurrent
reservations can never spend the same credits; :func:`decide` is the same rule as a plain
function, used to say why a conditional update did not happen, and by the unit tests' fakes.
"""

from domain.reservations import Outcome

# Balances stay well inside the 32-bit credits column.
MAX_CREDITS = 1_000_000_000
# The most credits one top-up adds.
MAX_TOP_UP = 1_000_000


class CreditLimitExceeded(ValueError):
    """A top-up would take a balance past MAX_CREDITS."""


def decide(credits: int | None, price: int | None) -> Outcome:
    """The outcome of reserving an item of ``price`` with ``credits`` (None: no such user or
    item; an unknown user wins over an unknown item)."""
    if credits is None:
        return Outcome.UNKNOWN_USER
    if price is None:
        return Outcome.UNKNOWN_ITEM
    if credits >= price:
        return Outcome.CONFIRMED
    return Outcome.REJECTED_INSUFFICIENT_CREDITS
