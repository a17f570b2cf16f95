"""A small OTLP/gRPC receiver: what Tempo would receive, kept in memory (and on disk).

The test suite points real processes at it to check the exact wire path, and
``reservations run`` embeds it so a user without Tempo still sees traces. It keeps the newest
``max_traces`` traces; with ``store_dir`` each trace is also appended to
``store_dir/traces.jsonl`` so ``reservations trace`` can read it from another process.

It answers the three OTLP services on one port, as a collector does: every process exports
its spans, log records and metrics to one ``OTEL_EXPORTER_OTLP_ENDPOINT``, and a missing
service would make each export fail (UNIMPLEMENTED). Log records are kept with their trace
(:mod:`cli.log_store`), metrics as the latest value of each series (:mod:`cli.metric_store`).
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from cli.log_records import from_proto_logs
from cli.log_store import LogStore
from cli.metric_store import MetricStore
from cli.spans import SpanRecord, from_proto_request
from cli.trace_files import TRACES_FILE, BoundedJsonLines, span_line

__all__ = ["OtlpReceiver", "SpanStore"]


class SpanStore:
    """Thread-safe, bounded store of received spans grouped by trace id."""

    def __init__(self, max_traces: int = 500, store_dir: Path | None = None) -> None:
        self._max_traces = max_traces
        self._traces: OrderedDict[str, list[SpanRecord]] = OrderedDict()
        self._lock = threading.Condition()
        self._file = BoundedJsonLines(store_dir / TRACES_FILE) if store_dir is not None else None
        self.received = 0

    def add(self, spans: list[SpanRecord]) -> None:
        with self._lock:
            for span in spans:
                self._traces.setdefault(span.trace_id, []).append(span)
                self._traces.move_to_end(span.trace_id)
            while len(self._traces) > self._max_traces:
                self._traces.popitem(last=False)
            self.received += len(spans)
            if self._file is not None:
                held = sum(map(len, self._traces.values()))
                self._file.append([span_line(span) for span in spans], held, self._lines)
            self._lock.notify_all()

    def _lines(self) -> Iterator[str]:
        return (span_line(span) for spans in self._traces.values() for span in spans)

    def trace(self, trace_id: str) -> list[SpanRecord]:
        with self._lock:
            return list(self._traces.get(trace_id, ()))

    def counts(self, trace_ids: Iterable[str]) -> dict[str, int]:
        """How many spans each of these traces holds (0 for one not seen or evicted)."""
        with self._lock:
            return {t: len(self._traces.get(t, ())) for t in trace_ids}

    def all_spans(self) -> list[SpanRecord]:
        with self._lock:
            return [span for spans in self._traces.values() for span in spans]

    def wait_for(self, predicate: Callable[["SpanStore"], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds or ``timeout`` seconds pass."""
        with self._lock:
            return bool(self._lock.wait_for(lambda: predicate(self), timeout=timeout))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self._store = store

    def Export(  # noqa: N802 - the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._store.add(from_proto_request(request.resource_spans))
        return trace_service_pb2.ExportTraceServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, store: LogStore) -> None:
        self._store = store

    def Export(  # noqa: N802 - the gRPC method name
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Any
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._store.add(from_proto_logs(request.resource_logs))
        return logs_service_pb2.ExportLogsServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, store: MetricStore) -> None:
        self._store = store

    def Export(  # noqa: N802 - the gRPC method name
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._store.add(request.resource_metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC server on ``host:port`` (port 0 picks a free one) feeding a SpanStore,
    a LogStore (``logs``) and a MetricStore (``metrics``)."""

    def __init__(
        self,
        store: SpanStore,
        host: str = "127.0.0.1",
        port: int = 0,
        logs: LogStore | None = None,
        metrics: MetricStore | None = None,
    ) -> None:
        self.store = store
        self.logs = logs if logs is not None else LogStore()
        self.metrics = metrics if metrics is not None else MetricStore()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(store), self._server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _LogsService(self.logs), self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self.metrics), self._server
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.host = host

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "OtlpReceiver":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait()
        self.store.close()
        self.logs.close()
