"""Trace quality at the edges: poison messages, log correlation, sampling, edge trust."""

import json
import uuid
from collections.abc import Callable

import aio_pika
import httpx
import pytest

from cli.collector import OtlpReceiver
from messaging import topology
from tests.stack import System
from tests.system import get_within
from tests.traces import (
    API,
    CREDIT_CHECK,
    REQUEST_PROCESS,
    children,
    one,
    render,
    wait_for_trace,
)

pytestmark = pytest.mark.e2e


def _post(system: System, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{system.api_url}/reservations",
        json={"username": "alice", "item_id": "book-1"},
        headers=headers,
        timeout=10,
    )


def _log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_poisoned_message_is_dead_lettered_in_the_same_trace(
    system: System, receiver: OtlpReceiver, amqp_url: str
) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.RESERVATIONS.name)
        dead_letters = await channel.get_queue(topology.DEAD_LETTERS.name)
        await dead_letters.purge()
        await exchange.publish(
            aio_pika.Message(
                b'{"version": 1, "reservation_id": "not-a-uuid"}',
                content_type="application/json",
                message_id="poison-1",
                headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            ),
            routing_key=topology.RESERVATION_REQUESTED,
            mandatory=True,
        )
        dead = await get_within(dead_letters, 10)
        assert str(dead.headers[topology.DEAD_LETTER_REASON]).startswith("invalid: reservation_id")
        assert dead.headers["x-original-queue"] == topology.CREDIT_CHECK.name
        await dead.ack()
    finally:
        await connection.close()

    dlx_publish = f"publish {topology.DEAD_LETTER_EXCHANGE.name}:{topology.RESERVATION_REQUESTED}"
    spans = wait_for_trace(receiver.store, trace_id, {REQUEST_PROCESS, dlx_publish})
    consumer = one(spans, REQUEST_PROCESS, CREDIT_CHECK, "CONSUMER")
    assert consumer.parent_span_id == parent_id
    assert "reservation_id" in consumer.attributes["messaging.dead_letter.reason"]
    assert [c.name for c in children(consumer, spans)] == [dlx_publish], render(spans)
    # The worker goes on consuming good messages.
    assert _post(system).status_code == 201


def test_worker_log_lines_carry_the_active_span_ids(system: System, receiver: OtlpReceiver) -> None:
    response = _post(system)
    body = response.json()
    spans = wait_for_trace(receiver.store, body["trace_id"], {REQUEST_PROCESS})
    consumer = one(spans, REQUEST_PROCESS, CREDIT_CHECK, "CONSUMER")
    worker = next(p for p in system.running if p.name == "workers.credit_check")
    # The handler logs the reservation id; the messaging layer's lines are DEBUG.
    story = [
        line
        for line in _log_lines(worker.log())
        if body["reservation_id"] in (line.get("reservation_id"), line.get("message_id"))
    ]
    # One line per message, with the outcome, the trace and the consumer span it happened in.
    assert [line["event"] for line in story] == ["credit checked"]
    assert (story[0]["outcome"], story[0]["replayed"]) == (body["status"], False)
    for line in story:
        assert line["trace_id"] == body["trace_id"]
        assert line["span_id"] == consumer.span_id
        assert line["service.name"] == CREDIT_CHECK
    api = next(p for p in system.running if p.name == "api")
    access = [line for line in _log_lines(api.log()) if "POST /reservations" in str(line["event"])]
    assert access and access[-1]["trace_id"] == body["trace_id"]


@pytest.mark.parametrize("ratio", ["0", "1"])
def test_the_api_sampling_decision_is_honoured_across_the_broker(
    make_system: Callable[[], System], api_port: int, receiver: OtlpReceiver, ratio: str
) -> None:
    system = make_system()
    system.start_worker("workers.credit_check")  # default sampler: parentbased_always_on
    system.start_api(
        api_port, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=ratio
    )
    response = _post(system)
    assert response.status_code == 201
    trace_id = response.json()["trace_id"]
    system.stop_all()  # flushes every span each process still holds
    services = {s.service for s in receiver.store.trace(trace_id)}
    assert services == (set() if ratio == "0" else {API, CREDIT_CHECK})


def test_continue_mode_continues_a_valid_incoming_traceparent(
    system: System, receiver: OtlpReceiver
) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = _post(system, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert response.json()["trace_id"] == trace_id
    spans = wait_for_trace(receiver.store, trace_id, {"POST /reservations", REQUEST_PROCESS})
    assert one(spans, "POST /reservations", API, "SERVER").parent_span_id == parent_id


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 10_000},
        {"tracestate": "k=" + "v" * 20_000, "baggage": "user=" + "x" * 20_000},
        {"baggage": ",".join(f"k{i}=v" for i in range(2_000))},
    ],
    ids=["garbage", "all-zero", "oversized-parent", "oversized-state", "many-baggage"],
)
def test_garbage_trace_headers_start_a_new_root_and_crash_nothing(
    system: System, receiver: OtlpReceiver, headers: dict[str, str]
) -> None:
    response = _post(system, headers)
    assert response.status_code == 201, response.text
    trace_id = response.json()["trace_id"]
    assert trace_id not in str(headers)
    spans = wait_for_trace(receiver.store, trace_id, {"POST /reservations", REQUEST_PROCESS})
    assert one(spans, "POST /reservations", API, "SERVER").parent_span_id is None


def test_link_mode_starts_a_new_root_that_links_to_the_caller(
    make_system: Callable[[], System], api_port: int, receiver: OtlpReceiver
) -> None:
    system = make_system()
    system.start_worker("workers.credit_check")
    system.start_api(api_port, INCOMING_TRACE="link")
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = _post(system, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert response.status_code == 201
    own_trace = response.json()["trace_id"]
    assert own_trace != trace_id
    spans = wait_for_trace(receiver.store, own_trace, {"POST /reservations", REQUEST_PROCESS})
    server = one(spans, "POST /reservations", API, "SERVER")
    assert server.parent_span_id is None
    assert server.links == (f"{trace_id}:{parent_id}",)
    assert not receiver.store.trace(trace_id)
