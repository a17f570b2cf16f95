"""What a load run measured, and latency samples turned into percentiles.

Every load generator (the CLI's ``load``, the benchmark's bare aio-pika client, its built-in
HTTP client, wrk) reports a :class:`LoadResult`, so whatever reads it never knows which ran.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    """One measured run (or window) of a load generator."""

    completed: int  # answers the generator counts as success (e.g. 201, or a matched reply)
    errors: int  # anything else: another status, a reset, a timeout
    elapsed_s: float  # length of the measured window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)  # every request, by outcome

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def requests(self) -> int:
        return self.completed + self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_rps": round(self.throughput, 1)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LoadResult":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence: an observed value, never an
    interpolated one (0 when the sequence is empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(
    latencies_ns: Sequence[int],
    *,
    errors: int,
    elapsed_s: float,
    statuses: Mapping[str, int] | None = None,
) -> LoadResult:
    """A LoadResult from per-request latencies (nanoseconds) of the completed requests."""
    ms = sorted(v / 1e6 for v in latencies_ns)
    return LoadResult(
        completed=len(ms),
        errors=errors,
        elapsed_s=round(elapsed_s, 3),
        p50_ms=round(percentile(ms, 50), 3),
        p90_ms=round(percentile(ms, 90), 3),
        p99_ms=round(percentile(ms, 99), 3),
        max_ms=round(ms[-1] if ms else 0.0, 3),
        mean_ms=round(sum(ms) / len(ms) if ms else 0.0, 3),
        statuses=dict(statuses or {}),
    )
