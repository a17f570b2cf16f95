"""What a reservation is and how it can end. A rejection is an outcome, not an error."""

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED_INSUFFICIENT_CREDITS = "rejected_insufficient_credits"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_ITEM = "unknown_item"


@dataclass(frozen=True)
class Reservation:
    reservation_id: UUID
    username: str
    item_id: str
    outcome: Outcome
    price: int | None
    credits_left: int | None
    download_token: str | None = None
    ready_at: datetime | None = None
    # True when this is the stored answer to a reservation that was already processed.
    replayed: bool = False

    def as_replayed(self) -> "Reservation":
        return replace(self, replayed=True)


@dataclass(frozen=True)
class Balance:
    username: str
    credits: int


@dataclass(frozen=True)
class Item:
    item_id: str
    price: int
