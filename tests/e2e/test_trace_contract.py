"""The trace contract, on the exact wire path Tempo receives: real API and worker processes,
each with its own tracer provider, exporting OTLP/gRPC to a receiver started by the test."""

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.collector import OtlpReceiver, SpanStore
from cli.spans import SpanRecord
from tests import processes

pytestmark = pytest.mark.e2e

API = "reservations-api"
WORKER = "credit-check-worker"


@pytest.fixture
def system(
    amqp_url: str,
    receiver: OtlpReceiver,
    database_env: dict[str, str],
    api_port: int,
    tmp_path: Path,
) -> Iterator[str]:
    env = processes.base_env(
        amqp_url,
        {**database_env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
    )
    worker = processes.start_worker("workers.credit_check", env, tmp_path)
    api = processes.start_api(api_port, env, tmp_path)
    yield f"http://127.0.0.1:{api_port}"
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit.
    assert api.stop() in (0, -signal.SIGTERM), api.log()
    assert worker.stop() == 0, worker.log()


def _wait_for_trace(store: SpanStore, trace_id: str, names: set[str]) -> list[SpanRecord]:
    def complete(s: SpanStore) -> bool:
        return names <= {span.name for span in s.trace(trace_id)}

    store.wait_for(complete, timeout=15)
    spans = store.trace(trace_id)
    assert names <= {s.name for s in spans}, sorted(s.name for s in spans)
    return spans


def _one(spans: list[SpanRecord], name: str, service: str, kind: str) -> SpanRecord:
    found = [s for s in spans if s.name == name and s.service == service]
    assert len(found) == 1, f"{name} in {service}: {[(s.name, s.service) for s in spans]}"
    assert found[0].kind == kind
    return found[0]


def _ancestors(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[str]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span.span_id)
    return chain


def test_confirmed_reservation_is_one_trace_across_both_services(
    system: str, receiver: OtlpReceiver
) -> None:
    response = httpx.post(
        f"{system}/reservations", json={"username": "alice", "item_id": "book-1"}, timeout=10
    )
    assert response.status_code == 201, response.text
    trace_id = response.json()["trace_id"]

    request_publish = "publish reservations:reservation.requested"
    request_process = "process reservations:reservation.requested:credit-check"
    reply_publish, reply_process = "publish amq.rabbitmq.reply-to", "process amq.rabbitmq.reply-to"
    spans = _wait_for_trace(
        receiver.store,
        trace_id,
        {"POST /reservations", request_publish, request_process, reply_publish, reply_process},
    )
    by_id = {s.span_id: s for s in spans}
    assert {s.trace_id for s in spans} == {trace_id}
    assert {s.service for s in spans} >= {API, WORKER}

    # 1. the API SERVER span
    server = _one(spans, "POST /reservations", API, "SERVER")
    assert server.parent_span_id is None
    # 2. the PRODUCER span of the request, inside the server span
    producer = _one(spans, request_publish, API, "PRODUCER")
    assert server.span_id in _ancestors(producer, by_id)
    # 3. the worker CONSUMER span, a DIRECT child of that producer span
    consumer = _one(spans, request_process, WORKER, "CONSUMER")
    assert consumer.parent_span_id == producer.span_id
    # 4. the DB spans, inside the consumer span
    db_spans = [
        s for s in spans if s.attributes.get("db.system") or s.attributes.get("db.system.name")
    ]
    assert db_spans, [s.name for s in spans]
    assert all(s.service == WORKER or s.service == API for s in db_spans)
    assert any(consumer.span_id in _ancestors(s, by_id) for s in db_spans)
    # 5. the worker PRODUCER span of the reply, inside the consumer span
    reply_producer = _one(spans, reply_publish, WORKER, "PRODUCER")
    assert reply_producer.parent_span_id == consumer.span_id
    # 6. the API CONSUMER span of the reply, a direct child of the reply producer
    reply_consumer = _one(spans, reply_process, API, "CONSUMER")
    assert reply_consumer.parent_span_id == reply_producer.span_id

    # Span names carry no per-request ids.
    for span in spans:
        assert response.json()["reservation_id"] not in span.name
        assert "amq.rabbitmq.reply-to." not in span.name
    # Current messaging conventions on the hop.
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.destination.name"] == (
        "reservations:reservation.requested:credit-check"
    )
    assert producer.attributes["messaging.message.id"] == response.json()["reservation_id"]
    assert consumer.attributes["reservation.outcome"] == "confirmed"
