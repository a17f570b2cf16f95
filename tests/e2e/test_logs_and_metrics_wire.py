"""Logs, metrics and the stable conventions, on the exact OTLP/gRPC wire: real API and worker
processes export spans to the trace receiver and, through the per-signal endpoint variables,
log records and metrics to a second receiver started by the test."""

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from cli.collector import OtlpReceiver, SpanStore
from devtools.addresses import free_port
from messaging.metrics import DURATION_BUCKETS
from tests import processes
from tests.stack import System
from tests.system import purge_work_queues
from tests.traces import (
    API,
    CONFIRMED_PROCESS,
    CREDIT_CHECK,
    FULFILMENT,
    REQUEST_PROCESS,
    one,
    render,
    wait_for_trace,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

# Stable HTTP server keys (semantic conventions v1.23+) and the legacy ones they replace.
STABLE_HTTP = {"http.request.method", "http.response.status_code", "url.path", "url.scheme"}
STABLE_HTTP |= {"network.protocol.version", "client.address", "user_agent.original"}
LEGACY_HTTP = {"http.method", "http.status_code", "http.target", "http.url", "http.scheme"}
LEGACY_HTTP |= {"http.flavor", "http.user_agent", "http.host", "http.server_name"}
LEGACY_HTTP |= {"net.host.port", "net.host.name", "net.peer.ip", "net.peer.port"}
STABLE_DB = {"db.system.name", "db.namespace", "db.query.text", "db.operation.name"}
LEGACY_DB = {"db.system", "db.name", "db.statement", "db.operation", "db.user"}
LEGACY_DB |= {"net.peer.name", "net.peer.port", "net.transport"}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class LogLine:
    service: str
    trace_id: str
    span_id: str
    severity: str
    body: Any
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Point:
    service: str
    name: str
    unit: str
    attributes: dict[str, Any]
    count: int
    bounds: tuple[float, ...] = ()


class LogsAndMetrics(
    logs_service_pb2_grpc.LogsServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """An OTLP/gRPC receiver for log records and histogram/sum data points."""

    def __init__(self) -> None:
        self.logs: list[LogLine] = []
        self.points: list[Point] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.endpoint = f"http://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method name
        if isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
            self._add_logs(request)
            return logs_service_pb2.ExportLogsServiceResponse()
        self._add_points(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        found = []
        for rl in request.resource_logs:
            service = _attributes(rl.resource.attributes).get("service.name", "")
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    found.append(
                        LogLine(
                            service,
                            record.trace_id.hex(),
                            record.span_id.hex(),
                            record.severity_text,
                            _value(record.body),
                            _attributes(record.attributes),
                        )
                    )
        with self._lock:
            self.logs.extend(found)

    def _add_points(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        found = []
        for rm in request.resource_metrics:
            service = _attributes(rm.resource.attributes).get("service.name", "")
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    for p in data.data_points:
                        count = p.count if hasattr(p, "count") else int(p.as_int)
                        attributes = _attributes(p.attributes)
                        bounds = tuple(getattr(p, "explicit_bounds", ()))
                        point = Point(service, metric.name, metric.unit, attributes, count, bounds)
                        found.append(point)
        with self._lock:
            self.points.extend(found)

    def start(self) -> "LogsAndMetrics":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait()


@pytest.fixture(scope="module")
def logs_and_metrics() -> Iterator[LogsAndMetrics]:
    receiver = LogsAndMetrics().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """The trace receiver, for this module's one system (tests/stack.py's is per test)."""
    receiver = OtlpReceiver(SpanStore()).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def wired(
    logs_and_metrics: LogsAndMetrics,
    receiver: OtlpReceiver,
    amqp_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    """The whole flow, one for the module (each test reads only what its own reservation
    caused); logs and metrics go to their own endpoint, exported every 200 ms. The receivers
    come first, so they are stopped last: the processes' final exports still land."""
    asyncio.run(purge_work_queues(amqp_url))
    where = tmp_path_factory.mktemp("wire")
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{where}/e2e.db"}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": logs_and_metrics.endpoint,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": logs_and_metrics.endpoint,
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    system = System(processes.base_env(amqp_url, env), where)
    try:
        system.start_worker("workers.credit_check")
        system.start_worker("workers.fulfilment")
        system.start_api(free_port())
        yield system
    finally:
        system.stop_all()


def _reserve(system: System) -> dict[str, Any]:
    response = httpx.post(
        f"{system.api_url}/reservations",
        json={"username": "alice", "item_id": "book-1"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_log_records_carry_the_ids_of_the_span_that_was_current(
    wired: System, receiver: OtlpReceiver, logs_and_metrics: LogsAndMetrics
) -> None:
    body = _reserve(wired)
    spans = wait_for_trace(receiver.store, body["trace_id"], {REQUEST_PROCESS})
    consumer = one(spans, REQUEST_PROCESS, CREDIT_CHECK, "CONSUMER")
    for attempt in eventually(15):
        with attempt:
            received = [
                line
                for line in logs_and_metrics.logs
                if line.body == "credit checked"
                and line.attributes.get("reservation_id") == body["reservation_id"]
            ]
            assert received, [line.body for line in logs_and_metrics.logs]
    (line,) = received
    assert (line.trace_id, line.span_id) == (body["trace_id"], consumer.span_id), render(spans)
    assert line.service == CREDIT_CHECK
    assert line.severity == "INFO"
    assert line.attributes["reservation_id"] == body["reservation_id"]
    # Ids and level are the record's own fields, not duplicated as attributes.
    assert not {"trace_id", "span_id", "level", "event"} & set(line.attributes)
    # Lines logged outside any span carry no ids ("api ready" is logged at start-up).
    ready = [line for line in logs_and_metrics.logs if line.body == "api ready"]
    assert ready and {(r.trace_id, r.span_id) for r in ready} == {("", "")}


def test_http_and_db_spans_carry_only_stable_keys_and_no_path_in_a_name(
    wired: System, receiver: OtlpReceiver
) -> None:
    body = _reserve(wired)
    # Each consumer span ends after the DB spans inside it.
    ends = {"POST /reservations", REQUEST_PROCESS, CONFIRMED_PROCESS}
    spans = wait_for_trace(receiver.store, body["trace_id"], ends)
    server = one(spans, "POST /reservations", API, "SERVER")
    keys = set(server.attributes)
    assert STABLE_HTTP <= keys and not LEGACY_HTTP & keys, server.attributes
    assert server.attributes["url.path"] == "/reservations"
    assert server.attributes["http.response.status_code"] == 201
    db_spans = [s for s in spans if "db.system.name" in s.attributes]
    assert db_spans, render(spans)
    for span in db_spans:
        assert not LEGACY_DB & set(span.attributes), (span.name, span.attributes)
        assert "/" not in span.name and ".db" not in span.name, span.name
    # Only statements: no pool "connect" span, no BEGIN.
    statements = db_spans
    names = {s.name for s in statements}
    for span in statements:
        assert STABLE_DB <= set(span.attributes), (span.name, span.attributes)
        operation = span.attributes["db.operation.name"]
        assert " " not in operation and operation.isupper(), span.attributes
        assert span.name.startswith(f"{operation} "), (span.name, operation)
        collection = span.attributes.get("db.collection.name")
        assert collection is None or span.name == f"{operation} {collection}", span.name
        assert span.attributes["db.namespace"] == "e2e", span.attributes  # the file's stem
    assert "UPDATE users" in names, names
    assert not {n for n in names if n == "connect" or n.startswith("BEGIN")}, names


def test_health_probes_make_no_spans(wired: System, receiver: OtlpReceiver) -> None:
    for path in ("/healthz", "/readyz") * 3:
        assert httpx.get(f"{wired.api_url}{path}", timeout=5).status_code == 200
    body = _reserve(wired)  # exported after the probes: once it arrives, they would have
    wait_for_trace(receiver.store, body["trace_id"], {"POST /reservations"})
    probes = [
        s
        for s in receiver.store.all_spans()
        if s.attributes.get("url.path") in ("/healthz", "/readyz") or "healthz" in s.name
    ]
    assert probes == []


def test_http_server_request_duration_arrives_with_semconv_name_unit_and_attributes(
    wired: System, logs_and_metrics: LogsAndMetrics
) -> None:
    _reserve(wired)
    for attempt in eventually(15):
        with attempt:
            points = [
                p
                for p in logs_and_metrics.points
                if p.name == "http.server.request.duration" and p.attributes.get("http.route")
            ]
            assert any(p.attributes["http.route"] == "/reservations" for p in points), points
    point = next(p for p in points if p.attributes["http.route"] == "/reservations")
    assert (point.service, point.unit) == (API, "s")
    assert point.attributes["http.request.method"] == "POST"
    assert point.attributes["http.response.status_code"] == 201
    assert point.count >= 1


MESSAGING_UNITS = {
    "messaging.client.operation.duration": "s",
    "messaging.process.duration": "s",
    "messaging.client.sent.messages": "{message}",
    "messaging.client.consumed.messages": "{message}",
}
REQUESTS = "reservations:reservation.requested"
REPLIES = {"messaging.destination.template": "amq.rabbitmq.reply-to"}


def test_messaging_metrics_arrive_with_semconv_names_units_and_attributes(
    wired: System, logs_and_metrics: LogsAndMetrics
) -> None:
    _reserve(wired)
    # (service, metric, destination): one hop of the reservation each, sampled or not.
    expected = {
        (API, "messaging.client.sent.messages", REQUESTS),
        (CREDIT_CHECK, "messaging.client.consumed.messages", f"{REQUESTS}:credit-check"),
        (CREDIT_CHECK, "messaging.client.sent.messages", "amq.rabbitmq.reply-to"),
        (CREDIT_CHECK, "messaging.client.sent.messages", "reservations:reservation.confirmed"),
        (API, "messaging.client.consumed.messages", "amq.rabbitmq.reply-to"),
        (FULFILMENT, "messaging.client.consumed.messages", CONFIRMED_PROCESS.split()[1]),
    }
    for attempt in eventually(15):
        with attempt:
            points = [p for p in logs_and_metrics.points if p.name in MESSAGING_UNITS]
            seen = {
                (
                    p.service,
                    p.name,
                    p.attributes.get("messaging.destination.name")
                    or p.attributes["messaging.destination.template"],
                )
                for p in points
            }
            assert expected <= seen, sorted(seen)
            assert set(MESSAGING_UNITS) <= {p.name for p in points}
    for point in points:
        assert point.unit == MESSAGING_UNITS[point.name], point
        attributes = point.attributes
        assert attributes["messaging.system"] == "rabbitmq"
        assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == 5672
        operation = (attributes["messaging.operation.name"], attributes["messaging.operation.type"])
        assert operation in {("publish", "send"), ("process", "process")}, point
        assert "error.type" not in attributes, point
        # Low cardinality: a reply is counted under its template, never its per-request name.
        if "messaging.destination.template" in attributes:
            assert (
                attributes == attributes | REPLIES
                and "messaging.destination.name" not in attributes
            )
        else:
            assert "amq.rabbitmq.reply-to" not in attributes["messaging.destination.name"]
        if point.name.endswith(".duration"):
            assert point.bounds == DURATION_BUCKETS, point
        assert point.count >= 1
