"""Poison messages go to the dead-letter queue at once, with a reason, and never loop; the
worker process keeps consuming good messages."""

import json
import struct
import uuid

import aio_pika
import httpx
import pamqp.encode
import pytest

from messaging import topology
from messaging.delivery import MAX_BODY_BYTES
from tests.stack import System
from tests.system import get_within, publishing_with_empty_dead_letters

VALID = {"version": 1, "reservation_id": "", "username": "alice", "item_id": "book-1"}


def _body(**changes: object) -> bytes:
    return json.dumps({**VALID, "reservation_id": str(uuid.uuid4()), **changes}).encode()


POISON = {
    "malformed-json": (b'{"version": 1, "reservation_id": ', "application/json", "Invalid JSON"),
    "schema-violation": (_body(username="no spaces allowed"), "application/json", "username"),
    "unknown-version": (_body(version=2), "application/json", "version"),
    "wrong-content-type": (_body(), "text/plain", "content type 'text/plain'"),
    "oversized": (
        _body(item_id="x" * (MAX_BODY_BYTES + 1)),
        "application/json",
        f"exceeds {MAX_BODY_BYTES}",
    ),
}


async def test_each_kind_of_poison_is_dead_lettered_once_with_its_reason(
    system: System, amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        declared = await topology.declare(channel)
        dead_letters = declared.queues[topology.DEAD_LETTERS.name]
        await dead_letters.purge()
        for kind, (body, content_type, _) in POISON.items():
            await declared.exchanges[topology.RESERVATIONS.name].publish(
                aio_pika.Message(body, content_type=content_type, message_id=kind),
                routing_key=topology.RESERVATION_REQUESTED,
                mandatory=True,
            )
        reasons = {}
        for _ in POISON:
            dead = await get_within(dead_letters, 10)
            reasons[dead.message_id] = str(dead.headers[topology.DEAD_LETTER_REASON])
            # First delivery: dead-lettered at once, never requeued in a loop.
            assert dead.headers.get("x-delivery-count", 0) == 0
            await dead.ack()
        for kind, (_, _, reason) in POISON.items():
            assert reason in reasons[kind], (kind, reasons[kind])
        # Nothing else: each poison message was dead-lettered exactly once.
        assert await dead_letters.get(fail=False) is None
        credit_check = await channel.declare_queue(
            topology.CREDIT_CHECK.name,
            durable=True,
            arguments=dict(topology.CREDIT_CHECK.arguments),
        )
        assert credit_check.declaration_result.message_count == 0
    finally:
        await connection.close()
    print(f"\ndead-lettered: {len(reasons)} {sorted(map(str, reasons))}")  # noqa: T201

    # The worker goes on with good messages.
    async with httpx.AsyncClient(base_url=system.api_url, timeout=10) as client:
        response = await client.post(
            "/reservations", json={"username": "alice", "item_id": "book-1"}
        )
    assert response.status_code == 201


def _publish_raw_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this process publish strings that are not UTF-8, as a buggy or hostile publisher
    can (RabbitMQ passes the bytes on): pamqp encodes ``"\\udcff"`` as the byte 0xff."""

    def raw(encoder: struct.Struct, value: str) -> bytes:
        data = value.encode("utf-8", "surrogateescape")
        return encoder.pack(len(data)) + data

    monkeypatch.setattr(pamqp.encode, "_string", raw)


async def test_a_property_that_is_not_utf8_is_dead_lettered_and_drops_no_connection(
    system: System, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A content type with a byte that is not UTF-8 (and a message id; header keys: the unit
    tests of messaging.lenient_decoding):
    pamqp could not decode it, so the worker's connection dropped at every delivery of it, and
    each drop sent back its prefetched requests too, until the delivery limit dead-lettered
    them. Now it is dead-lettered at once, with its reason, and the connection stays up."""
    worker = next(p for p in system.running if p.name == "workers.credit_check")
    since = worker.log_offset()
    _publish_raw_bytes(monkeypatch)
    async with publishing_with_empty_dead_letters(amqp_url) as declared:
        await declared.exchanges[topology.RESERVATIONS.name].publish(
            aio_pika.Message(
                _body(), content_type="application/json\udcff", message_id="not-utf8\udcff"
            ),
            routing_key=topology.RESERVATION_REQUESTED,
            mandatory=True,
        )
        dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 10)
        await dead.ack()
    assert dead.headers.get("x-delivery-count", 0) == 0  # at once, on its first delivery
    assert "content type 'application/json\ufffd'" in str(dead.headers[topology.DEAD_LETTER_REASON])
    assert dead.message_id == "not-utf8\ufffd"
    async with httpx.AsyncClient(base_url=system.api_url, timeout=10) as client:
        response = await client.post(
            "/reservations", json={"username": "alice", "item_id": "book-1"}
        )
    assert response.status_code == 201
    stopped = worker.log_since(since)
    assert "unmarshal" not in stopped and "reconnect" not in stopped.lower(), stopped


async def test_what_cannot_be_encoded_as_it_was_read_is_still_dead_lettered_with_its_reason(
    system: System, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A content type of 120 bytes that are not UTF-8 reads as 120 U+FFFD, 360 bytes: more
    than a property holds; a header value that is not UTF-8 reads as ``bytes``, which pamqp
    does not encode. The dead letter, a copy, must still go out with its reason (it went to the
    broker's dead-lettering without one, or not at all)."""
    _publish_raw_bytes(monkeypatch)
    bad = "\udcff" * 120
    async with publishing_with_empty_dead_letters(amqp_url) as declared:
        await declared.exchanges[topology.RESERVATIONS.name].publish(
            aio_pika.Message(
                _body(),
                content_type=bad,
                message_id="too-long",
                headers={"raw": "x" + bad, "nested": {"raw": bad}},
            ),
            routing_key=topology.RESERVATION_REQUESTED,
            mandatory=True,
        )
        dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 10)
        await dead.ack()
    assert dead.message_id == "too-long"
    assert "content type" in str(dead.headers[topology.DEAD_LETTER_REASON])
    assert dead.content_type == "\ufffd" * 85  # cut to 255 bytes
    assert dead.headers["raw"] == b"x" + b"\xff" * 120
    assert dead.headers["nested"] == {"raw": b"\xff" * 120}


async def test_a_first_route_header_no_routing_key_can_hold_is_not_trusted(
    system: System, amqp_url: str
) -> None:
    """A dead letter is published with the routing key its ``x-original-routing-key`` header
    names: one over 255 bytes, from a publisher's headers, failed the publish, and the message
    went to the broker's dead-lettering without its reason (a review's)."""
    async with publishing_with_empty_dead_letters(amqp_url) as declared:
        await declared.exchanges[topology.RESERVATIONS.name].publish(
            aio_pika.Message(
                b"not json",
                content_type="application/json",
                message_id="long-route",
                headers={
                    topology.ORIGINAL_EXCHANGE: topology.RESERVATIONS.name,
                    topology.ORIGINAL_ROUTING_KEY: "k" * 300,
                },
            ),
            routing_key=topology.RESERVATION_REQUESTED,
            mandatory=True,
        )
        dead = await get_within(declared.queues[topology.DEAD_LETTERS.name], 10)
        await dead.ack()
    assert dead.message_id == "long-route"
    assert "Invalid JSON" in str(dead.headers[topology.DEAD_LETTER_REASON])
    assert dead.routing_key == topology.RESERVATION_REQUESTED  # the delivery's own route
    assert dead.headers[topology.ORIGINAL_ROUTING_KEY] == topology.RESERVATION_REQUESTED
