"""The embedded collector's metrics: the latest value of each series, nothing more.

Enough to answer "how many messages did the workers consume?" exactly (the messaging
counters are recorded for every message, sampled or not) without a Prometheus. A series is
one metric of one process (``service.instance.id``) with one set of attributes; its value is
a sum's total or a histogram's count. Cumulative points replace the series' value, delta
points add to it. At most ``max_series`` series are kept; points of further ones are counted
in ``dropped``.
"""

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2

from cli.spans import proto_attributes, service_name

DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@dataclass(frozen=True)
class Series:
    service: str
    instance: str
    name: str
    unit: str
    attributes: dict[str, Any]
    value: float


class MetricStore:
    """Thread-safe, bounded latest-value store of the received metric series."""

    def __init__(self, max_series: int = 10_000) -> None:
        self._max_series = max_series
        self._series: dict[tuple[str, str, frozenset[tuple[str, Any]]], Series] = {}
        self._lock = threading.Lock()
        self.points = 0
        self.dropped = 0

    def add(self, resource_metrics: Iterable[metrics_pb2.ResourceMetrics]) -> None:
        with self._lock:
            for rm in resource_metrics:
                resource = proto_attributes(rm.resource.attributes)
                service = service_name(resource)
                instance = str(resource.get("service.instance.id", service))
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        self._add_metric(service, instance, metric)

    def _add_metric(self, service: str, instance: str, metric: metrics_pb2.Metric) -> None:
        kind = metric.WhichOneof("data")
        if kind not in ("sum", "histogram", "gauge"):
            return  # exponential histograms and summaries: not emitted by this project
        data = getattr(metric, kind)
        delta = getattr(data, "aggregation_temporality", 0) == DELTA
        for point in data.data_points:
            self.points += 1
            attributes = proto_attributes(point.attributes)
            key = (instance, metric.name, frozenset((k, str(v)) for k, v in attributes.items()))
            if key not in self._series and len(self._series) >= self._max_series:
                self.dropped += 1
                continue
            value = float(point.count if kind == "histogram" else _number(point))
            if delta and key in self._series:
                value += self._series[key].value
            series = Series(service, instance, metric.name, metric.unit, attributes, value)
            self._series[key] = series

    def series(self, name: str) -> list[Series]:
        with self._lock:
            return [s for s in self._series.values() if s.name == name]

    def total(self, name: str, where: Mapping[str, Any] | None = None) -> float:
        """The sum of ``name``'s series (across processes) whose attributes include ``where``."""
        wanted = dict(where or {})
        return sum(
            s.value
            for s in self.series(name)
            if all(s.attributes.get(k) == v for k, v in wanted.items())
        )


def _number(point: metrics_pb2.NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
