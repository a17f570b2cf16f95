"""What one benchmark run measures (the plan) and what each level of a scenario measured."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.load_stats import LoadResult

BASELINE = "baseline"
UNTRACED = "system-untraced"
TRACED = "system-traced"
UNREACHABLE = "system-traced-unreachable"
SPANS_ONLY = "system-traced-spans-only"
TWIN_UNTRACED = "twin-untraced"
TWIN_TRACED = "twin-traced"
SCENARIOS = (BASELINE, UNTRACED, TRACED, UNREACHABLE, SPANS_ONLY, TWIN_UNTRACED, TWIN_TRACED)
# What each scenario runs under HTTP load: the system (api/, workers/) or the lean twin
# (bench/twin), and how it traces: "off", "on" (to the span-counting receiver), "spans" (the
# same, with log records and metrics turned off, as the twin has none) or "unreachable".
TARGETS = {
    UNTRACED: ("system", "off"),
    TRACED: ("system", "on"),
    UNREACHABLE: ("system", "unreachable"),
    SPANS_ONLY: ("system", "spans"),
    TWIN_UNTRACED: ("twin", "off"),
    TWIN_TRACED: ("twin", "on"),
}
# Every run measures these levels: the summary compares 32 connections with 1.
REQUIRED_LEVELS = (1, 32)

WORK_QUEUES = ("credit-check", "fulfilment")
QUEUE_FULL_LOG = "Queue full, dropping"  # BatchSpanProcessor (deduplicated per 20 s)
EXPORT_FAILED_LOG = "Failed to export"  # OTLP exporter, after its retries
CALIBRATION_REQUESTS = 20
# Log lines that mean the broker dropped the connections: someone restarted it (a test's
# ``rabbitmqctl stop_app``, say). A level that saw one measured an outage, not the system.
DISRUPTION_MARKERS = ("CONNECTION_FORCED", "Unexpected connection close", "AMQPConnectionError")

# The modes that export to the receiver, which counts what arrives.
RECEIVED = ("on", "spans")
TRACING_OFF = {"OTEL_SDK_DISABLED": "true"}
ONLY_SPANS = {"OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}


def tracing_on(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }


def bsp_delay_s() -> float:
    return float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000


@dataclass
class Plan:
    scenarios: list[str]
    levels: list[int]
    warmup: float
    duration: float
    db: str
    postgres_url: str
    amqp_url: str
    source_root: Path
    bench_root: Path
    loadgen: str  # "wrk" or "builtin"
    keep_logs: Path | None = None


@dataclass
class LevelResult:
    scenario: str
    concurrency: int
    load: LoadResult
    cpu_s: dict[str, float]  # CPU seconds per process role over the measured window
    spans: dict[str, Any] | None = None
    reservations: dict[str, int] = field(default_factory=dict)
    audit: dict[str, Any] | None = None  # bench.audit.Audit: the scenario so far, after the level
    disrupted: int = 0  # broker-disconnect log lines seen during the level
    rss_mib: dict[str, float] = field(default_factory=dict)  # per service, at the window's end

    def cpu_s_per_request(self) -> dict[str, float]:
        n = max(1, self.load.completed)
        return {role: round(cpu / n, 7) for role, cpu in self.cpu_s.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            **self.load.to_dict(),
            "cpu_s": self.cpu_s,
            "cpu_s_per_request": self.cpu_s_per_request(),
            "spans": self.spans,
            "reservations": self.reservations,
            "audit": self.audit,
            "broker_disrupted": self.disrupted,
            "rss_mib": self.rss_mib,
        }


Say = Callable[[str], None]
