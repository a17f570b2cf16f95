"""The messages on the wire, as the system's pydantic contracts serialize them, by hand.

``messaging.messages`` stays the contract: a reply or event built here parses there (the
tests check it). Parsing is strict where it matters: exactly the expected fields, version 1,
a UUID, and identifiers of 1-64 characters of ``[A-Za-z0-9_.-]``.
"""

import re
import uuid
from typing import Any

import orjson

from bench.twin.ledger import Decision

IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_BODY_BYTES = 16 * 1024
_REQUEST = frozenset(("version", "reservation_id", "username", "item_id"))
_CONFIRMED = frozenset(("version", "reservation_id", "username", "item_id", "price"))


class Invalid(ValueError):
    """A body that is not one of our messages (a poison message)."""


def identifier(value: Any) -> str:
    if not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None:
        raise Invalid(f"not an identifier: {str(value)[:70]!r}")
    return value


def _object(body: bytes, fields: frozenset[str]) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise Invalid(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.keys() != fields or data["version"] != 1:
        raise Invalid("unexpected fields or version")
    try:
        data["reservation_id"] = str(uuid.UUID(data["reservation_id"]))
    except (ValueError, TypeError, AttributeError):
        raise Invalid("reservation_id is not a UUID") from None
    return data


def parse_requested(body: bytes) -> tuple[str, str, str]:
    """(reservation_id, username, item_id) of a ReservationRequested."""
    data = _object(body, _REQUEST)
    return data["reservation_id"], identifier(data["username"]), identifier(data["item_id"])


def parse_confirmed(body: bytes) -> str:
    """The reservation id of a ReservationConfirmed."""
    data = _object(body, _CONFIRMED)
    identifier(data["username"])
    identifier(data["item_id"])
    if not isinstance(data["price"], int):
        raise Invalid("price is not an integer")
    return str(data["reservation_id"])


def requested(reservation_id: str, username: str, item_id: str) -> bytes:
    return orjson.dumps(
        {"version": 1, "reservation_id": reservation_id, "username": username, "item_id": item_id}
    )


def credit_checked(reservation_id: str, decision: Decision) -> bytes:
    return orjson.dumps(
        {
            "version": 1,
            "reservation_id": reservation_id,
            "outcome": decision.outcome,
            "credits_left": decision.credits_left,
            "price": decision.price,
        }
    )


def reservation_confirmed(reservation_id: str, username: str, item_id: str, price: int) -> bytes:
    return orjson.dumps(
        {
            "version": 1,
            "reservation_id": reservation_id,
            "username": username,
            "item_id": item_id,
            "price": price,
        }
    )


def parse_credit_checked(body: bytes) -> dict[str, Any]:
    data = orjson.loads(body)
    if not isinstance(data, dict) or data.get("version") != 1:
        raise Invalid("unexpected reply")
    return data
