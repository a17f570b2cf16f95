"""The twin's hand-written wire formats match the system's contracts, and launch() composes
the environment the bench will hand its process wrapper."""

import uuid

import pytest

from bench.twin import TRACED, UNTRACED, launch
from bench.twin import contracts as twin
from bench.twin.answers import from_reply, parse_request
from bench.twin.ledger import Decision
from domain.reservations import Outcome
from messaging.messages import CreditChecked, ReservationConfirmed, ReservationRequested


def test_the_twin_reads_what_the_system_publishes_and_the_other_way_round() -> None:
    rid = uuid.uuid4()
    request = ReservationRequested(reservation_id=rid, username="alice", item_id="book-1")
    assert twin.parse_requested(request.to_body()) == (str(rid), "alice", "book-1")
    assert ReservationRequested.from_body(twin.requested(str(rid), "alice", "book-1")) == request
    decision = Decision("rejected_insufficient_credits", 25, 5)
    assert CreditChecked.from_body(twin.credit_checked(str(rid), decision)) == CreditChecked(
        reservation_id=rid, outcome=Outcome.REJECTED_INSUFFICIENT_CREDITS, credits_left=5, price=25
    )
    event = ReservationConfirmed(reservation_id=rid, username="a", item_id="b", price=3)
    assert twin.parse_confirmed(event.to_body()) == str(rid)
    assert (
        ReservationConfirmed.from_body(twin.reservation_confirmed(str(rid), "a", "b", 3)) == event
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"version": 2, "reservation_id": "x", "username": "a", "item_id": "b"}',
        b'{"version": 1, "reservation_id": "x", "username": "a", "item_id": "b"}',
        b'{"version": 1, "reservation_id": "%s", "username": "a b", "item_id": "b"}'
        % str(uuid.uuid4()).encode(),
        b'{"version": 1, "reservation_id": "%s", "username": "a", "item_id": "b", "x": 1}'
        % str(uuid.uuid4()).encode(),
    ],
)
def test_a_poison_request_is_invalid(body: bytes) -> None:
    with pytest.raises(twin.Invalid):
        twin.parse_requested(body)


def test_answers_follow_the_reply() -> None:
    rid = str(uuid.uuid4())
    confirmed = twin.credit_checked(rid, Decision("confirmed", 10, 90))
    assert from_reply(rid, confirmed, "t")[:2] == (
        201,
        {"reservation_id": rid, "status": "confirmed", "credits_left": 90, "trace_id": "t"},
    )
    assert from_reply(rid, None, "")[0] == 202
    assert from_reply(rid, b"garbage", "")[0] == 202
    unknown = twin.credit_checked(rid, Decision("unknown_item", None, 90))
    assert (
        from_reply(rid, unknown, "", ("alice", "nothing"))[1]["detail"] == "unknown item 'nothing'"
    )
    assert parse_request(b'{"username": "alice", "item_id": "book-1"}') == ("alice", "book-1")
    errors = parse_request(b'{"username": "alice"}')
    assert isinstance(errors, list) and errors[0]["loc"] == ["body", "item_id"]


def test_launch_gives_each_variant_its_tracing_and_the_api_its_port() -> None:
    base = {"AMQP_URL": "amqp://x/", "DATABASE_URL": "stale", "OTEL_SDK_DISABLED": "false"}
    db = {"DATABASE_URL": "sqlite+aiosqlite:////tmp/t.db"}
    worker, fulfilment, api = launch(UNTRACED, db, base, port=1234)
    assert [p.module_args for p in (worker, fulfilment, api)] == [
        ["bench.twin.credit_check"],
        ["bench.twin.fulfilment"],
        ["bench.twin.api"],
    ]
    assert worker.queue == "credit-check" and fulfilment.queue == "fulfilment"
    assert api.port == 1234 and api.env["API_PORT"] == "1234"
    assert worker.env["OTEL_SDK_DISABLED"] == "true"
    assert worker.env["DATABASE_URL"] == db["DATABASE_URL"]
    traced = launch(TRACED, db, base, port=1, otlp_endpoint="http://127.0.0.1:4317")[0].env
    assert "OTEL_SDK_DISABLED" not in traced
    assert traced["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    with pytest.raises(ValueError):
        launch(TRACED, db, base, port=1)
