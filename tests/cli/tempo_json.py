"""The project's spans in the exact shape Tempo's ``GET /api/v2/traces/{id}`` answers with:
ids in base64, kinds as ``SPAN_KIND_*`` strings, nanoseconds as strings."""

import base64
from collections.abc import Iterable
from typing import Any

from cli.spans import SpanRecord

EMPTY_TRACE: dict[str, Any] = {"trace": {}, "metrics": {}}


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in values.items()]


def span_json(span: SpanRecord) -> dict[str, Any]:
    document: dict[str, Any] = {
        "traceId": b64(span.trace_id),
        "spanId": b64(span.span_id),
        "name": span.name,
        "kind": f"SPAN_KIND_{span.kind}",
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": attributes(span.attributes),
        "status": {}
        if span.status == "UNSET"
        else {"code": f"STATUS_CODE_{span.status}", "message": span.status_message},
    }
    if span.parent_span_id:
        document["parentSpanId"] = b64(span.parent_span_id)
    if span.events:
        document["events"] = [
            {"timeUnixNano": str(e.time_ns), "name": e.name, "attributes": attributes(e.attributes)}
            for e in span.events
        ]
    return document


def tempo_v2(spans: Iterable[SpanRecord]) -> dict[str, Any]:
    """One resourceSpans entry per service, one scopeSpans entry per instrumentation scope."""
    by_service: dict[str, dict[str, list[SpanRecord]]] = {}
    for span in spans:
        by_service.setdefault(span.service, {}).setdefault(span.scope, []).append(span)
    return {
        "trace": {
            "resourceSpans": [
                {
                    "resource": {"attributes": attributes({"service.name": service})},
                    "scopeSpans": [
                        {"scope": {"name": scope}, "spans": [span_json(s) for s in scoped]}
                        for scope, scoped in scopes.items()
                    ],
                }
                for service, scopes in by_service.items()
            ]
        },
        "metrics": {},
    }
