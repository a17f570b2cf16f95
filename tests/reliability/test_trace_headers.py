"""Garbage trace headers never break consumption.

Anyone who can publish can put any AMQP type in ``traceparent``, ``tracestate`` or ``baggage``.
For each of int, float, bytes (an AMQP byte array), table, list and a 10 KB string in each of
the three headers, a valid request and an invalid one go to the real credit-check worker:

- every valid one is processed (its reservation is recorded), in a fresh trace whose CONSUMER
  span carries the ``messaging.trace_context.unusable`` event;
- every invalid one is dead-lettered exactly once, with its reason;
- nothing is left unacked or ready in the work queue.

The same holds with the SDK disabled (``OTEL_SDK_DISABLED=true``).
"""

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import pytest

from cli.collector import OtlpReceiver
from messaging import topology
from messaging.instrumentation import UNUSABLE_CONTEXT
from messaging.propagation import TRACE_FIELDS
from tests.infra import Broker
from tests.stack import System
from tests.system import get_within, publishing_with_empty_dead_letters
from tests.traces import REQUEST_PROCESS
from tests.waiting import eventually

GARBAGE: dict[str, Any] = {
    "int": 42,
    # AMQP's byte array ("x"); pamqp sends bytearray and cannot encode bytes.
    "bytes": bytearray(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    "float": 4.2,
    "table": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    "list": ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 7],
    "10kb-string": "x" * 10_240,
}
CASES = [(field, kind) for field in TRACE_FIELDS for kind in GARBAGE]


def _body(reservation_id: str, valid: bool) -> bytes:
    username = "gina" if valid else "not a valid username"
    return json.dumps(
        {"version": 1, "reservation_id": reservation_id, "username": username, "item_id": "pen"}
    ).encode()


def _work_queue_counts(broker: Broker) -> tuple[int, int]:
    out = broker.rabbitmqctl(
        "list_queues", "-q", "-p", broker.vhost, "name", "messages_ready", "messages_unacknowledged"
    )
    for line in out.splitlines():
        name, ready, unacked = line.split()
        if name == topology.CREDIT_CHECK.name:
            return int(ready), int(unacked)
    raise AssertionError(out)


@pytest.mark.parametrize("sdk", ["enabled", "disabled"])
def test_garbage_trace_headers_never_break_consumption(
    make_system: Callable[[], System],
    api_port: int,
    broker: Broker,
    amqp_url: str,
    receiver: OtlpReceiver,
    sdk: str,
) -> None:
    system = make_system()
    system.seed({"gina": 1_000}, {"pen": 1})
    env = {"OTEL_SDK_DISABLED": "true"} if sdk == "disabled" else {}
    worker = system.start_worker("workers.credit_check", **env)
    system.start_api(api_port)

    valid = {str(uuid.uuid4()): case for case in CASES}
    invalid = {str(uuid.uuid4()): case for case in CASES}
    dead = asyncio.run(_publish_and_collect_dead_letters(amqp_url, valid, invalid))
    assert set(dead) == set(invalid)
    assert all(reason.startswith("invalid:") for reason in dead.values()), dead

    with httpx.Client(base_url=system.api_url, timeout=10) as client:
        for reservation_id in valid:
            for attempt in eventually(15, every=0.1):
                with attempt:
                    view = client.get(f"/reservations/{reservation_id}")
                    assert view.status_code == 200, (valid[reservation_id], view.text)
            assert view.json()["status"] == "confirmed"
        assert client.get("/users/gina").json()["credits"] == 1_000 - len(valid)
    for attempt in eventually(10, every=0.2):
        with attempt:
            assert _work_queue_counts(broker) == (0, 0)

    if sdk == "enabled":
        flagged = _flagged_consumer_spans(receiver, set(valid))
        assert flagged == {rid: [valid[rid][0]] for rid in valid}, flagged
    assert "Consumer callback failed" not in worker.log()
    assert "Traceback" not in worker.log(), worker.log()[-3_000:]
    sys.stdout.write(
        f"\nSDK {sdk}: {len(valid)} valid processed, {len(dead)} invalid dead-lettered once, "
        "0 unacked\n"
    )


async def _publish_and_collect_dead_letters(
    amqp_url: str, valid: dict[str, tuple[str, str]], invalid: dict[str, tuple[str, str]]
) -> dict[str, str]:
    """Publish each request with its garbage header; the dead letters' reasons by id."""
    async with publishing_with_empty_dead_letters(amqp_url) as declared:
        dead_letters = declared.queues[topology.DEAD_LETTERS.name]
        exchange = declared.exchanges[topology.RESERVATIONS.name]
        for bucket, is_valid in ((valid, True), (invalid, False)):
            for reservation_id, (field, kind) in bucket.items():
                await exchange.publish(
                    aio_pika.Message(
                        _body(reservation_id, is_valid),
                        content_type="application/json",
                        message_id=reservation_id,
                        headers={field: GARBAGE[kind]},
                    ),
                    routing_key=topology.RESERVATION_REQUESTED,
                    mandatory=True,
                )
        dead: dict[str, str] = {}
        for _ in invalid:
            message = await get_within(dead_letters, 15)
            assert message.message_id is not None
            assert message.message_id not in dead, "dead-lettered twice"
            dead[message.message_id] = str(message.headers[topology.DEAD_LETTER_REASON])
            await message.ack()
        assert await dead_letters.get(fail=False) is None  # each exactly once, nothing else
    return dead


def _flagged_consumer_spans(receiver: OtlpReceiver, ids: set[str]) -> dict[str, list[str]]:
    """reservation id -> the header names its CONSUMER span's unusable-context event lists;
    each such span is a root (a fresh trace)."""
    flagged: dict[str, list[str]] = {}

    def collect() -> bool:
        flagged.clear()
        for span in receiver.store.all_spans():
            rid = span.attributes.get("reservation.id")
            if span.name != REQUEST_PROCESS or rid not in ids:
                continue
            assert span.parent_span_id in (None, ""), span
            for event in span.events:
                if event.name == UNUSABLE_CONTEXT:
                    flagged[str(rid)] = list(event.attributes["messaging.header.names"])
        return set(flagged) == ids

    receiver.store.wait_for(lambda _: collect(), 15)
    return flagged
