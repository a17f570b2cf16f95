"""Log records as the embedded collector keeps them: enough to print a line under the span
that wrote it (ids, time, level, text, service), read from OTLP protobuf and kept as JSON."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.logs.v1 import logs_pb2

from cli.spans import proto_attributes, proto_value, service_name


@dataclass(frozen=True)
class LogLine:
    trace_id: str  # "" for a line logged outside any span
    span_id: str
    time_ns: int
    severity: str
    body: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # asdict's deep copy of the attributes, left out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LogLine":
        return cls(**data)


def from_proto_logs(resource_logs: Iterable[logs_pb2.ResourceLogs]) -> list[LogLine]:
    """Lines from an OTLP ``ExportLogsServiceRequest``'s ``resource_logs``."""
    lines = []
    for rl in resource_logs:
        service = service_name(proto_attributes(rl.resource.attributes))
        for sl in rl.scope_logs:
            for record in sl.log_records:
                body = proto_value(record.body)
                lines.append(
                    LogLine(
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                        severity=record.severity_text
                        or logs_pb2.SeverityNumber.Name(record.severity_number).removeprefix(
                            "SEVERITY_NUMBER_"
                        ),
                        body=body if isinstance(body, str) else str(body),
                        service=service,
                        attributes=proto_attributes(record.attributes),
                    )
                )
    return lines
