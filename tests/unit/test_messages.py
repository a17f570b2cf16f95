import uuid

import pytest
from pydantic import ValidationError

from domain.reservations import Outcome
from messaging.messages import CreditChecked, InvalidMessage, ReservationRequested, is_json


def test_request_round_trips_as_json() -> None:
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b-1")
    body = request.to_body()
    assert body.startswith(b"{")
    assert ReservationRequested.from_body(body) == request


def test_messages_are_frozen() -> None:
    request = ReservationRequested(reservation_id=uuid.uuid4(), username="alice", item_id="b-1")
    with pytest.raises(ValidationError):
        setattr(request, "username", "mallory")  # noqa: B010 - bypasses the type checker on purpose


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "Invalid JSON"),
        (b'{"version": 2, "reservation_id": "%s", "username": "a", "item_id": "b"}', "version"),
        (b'{"version": true, "reservation_id": "%s", "username": "a", "item_id": "b"}', "version"),
        (b'{"version": 1, "reservation_id": "%s", "username": "a b", "item_id": "b"}', "username"),
        (b'{"version": 1, "reservation_id": "%s", "username": "a", "item_id": ""}', "item_id"),
        (b'{"version": 1, "reservation_id": "%s", "username": "a"}', "item_id"),
        (
            b'{"version": 1, "reservation_id": "%s", "username": "a", "item_id": "b", "x": 1}',
            "x",
        ),
    ],
)
def test_invalid_bodies_raise_a_short_reason(body: bytes, reason: str) -> None:
    if b"%s" in body:
        body = body % str(uuid.uuid4()).encode()
    with pytest.raises(InvalidMessage) as error:
        ReservationRequested.from_body(body)
    assert reason in str(error.value)
    assert len(str(error.value)) <= 256


def test_identifier_is_limited_to_64_characters() -> None:
    ReservationRequested(reservation_id=uuid.uuid4(), username="a" * 64, item_id="b")
    with pytest.raises(ValidationError):
        ReservationRequested(reservation_id=uuid.uuid4(), username="a" * 65, item_id="b")


def test_reply_carries_outcome_values() -> None:
    reply = CreditChecked(
        reservation_id=uuid.uuid4(), outcome=Outcome.CONFIRMED, credits_left=3, price=7
    )
    assert b'"outcome":"confirmed"' in reply.to_body()


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ('Application/JSON;charset="UTF-8"', True),
        ("application/json; charset=latin-1", False),
        ("application/jsonx", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_json_is_application_json_with_any_parameters_but_another_charset(
    content_type: str | None, json: bool
) -> None:
    assert is_json(content_type) is json
