"""One span model for every trace source: the embedded collector (OTLP protobuf) and Tempo's
HTTP API (OTLP JSON, ids in base64). The waterfall renderer and the tests read this model."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUSES = ("UNSET", "OK", "ERROR")


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "UNSET"
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()
    links: tuple[str, ...] = ()  # "trace_id:span_id" of each linked span
    scope: str = ""

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives, without its deep copies (37 -> 8 µs a span with
        the JSON encoding: the embedded collector writes one line per span it receives)."""
        return {**vars(self), "events": [dict(vars(event)) for event in self.events]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SpanRecord":
        events = tuple(SpanEvent(**e) for e in data.get("events", ()))
        return cls(**{**data, "events": events, "links": tuple(data.get("links", ()))})


def from_proto_request(resource_spans: Iterable[trace_pb2.ResourceSpans]) -> list[SpanRecord]:
    """Spans from an OTLP ``ExportTraceServiceRequest``'s ``resource_spans``."""
    records = []
    for rs in resource_spans:
        service = service_name(proto_attributes(rs.resource.attributes))
        for ss in rs.scope_spans:
            for span in ss.spans:
                records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=_KINDS[span.kind],
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=proto_attributes(span.attributes),
                        status=_STATUSES[span.status.code],
                        status_message=span.status.message,
                        events=tuple(
                            SpanEvent(e.name, e.time_unix_nano, proto_attributes(e.attributes))
                            for e in span.events
                        ),
                        links=tuple(f"{lk.trace_id.hex()}:{lk.span_id.hex()}" for lk in span.links),
                        scope=ss.scope.name,
                    )
                )
    return records


def from_otlp_json(document: Mapping[str, Any]) -> list[SpanRecord]:
    """Spans from Tempo's ``/api/v2/traces/{id}`` (``trace.resourceSpans``) or
    ``/api/traces/{id}`` (``batches``) answer, read by protobuf's own JSON mapping (ids in
    base64, enums by name, 64-bit numbers as strings). An empty ``trace`` gives no spans;
    a document that is not OTLP raises ``json_format.ParseError``."""
    resource_spans = document.get("trace", {}).get("resourceSpans") or document.get("batches", [])
    traces = json_format.ParseDict(
        {"resourceSpans": resource_spans}, trace_pb2.TracesData(), ignore_unknown_fields=True
    )
    return from_proto_request(traces.resource_spans)


def service_name(resource_attributes: Mapping[str, Any]) -> str:
    """The ``service.name`` of an OTLP resource's attributes (``unknown`` without one)."""
    return str(resource_attributes.get("service.name", "unknown"))


def proto_attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: proto_value(kv.value) for kv in attributes}


def proto_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [proto_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return proto_attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None
