"""The run's headline: issue 12's figures at 32 connections, and whether each target is met.

- ``system_over_twin_untraced`` / ``system_over_twin_traced``: the system's throughput over the
  twin's, same tracing, same database, same level;
- ``traced_over_untraced``: the system traced over the system untraced;
- ``scaling_32_over_1``: the system's untraced throughput at 32 connections over 1;
- ``p99_ms_traced``: the system's p99 latency traced;
- ``errors``: failed requests in every scenario at every level;
- ``dropped_spans``: spans expected but not received, every row exporting to the receiver
  (traced system, spans-only system, twin), every level.

``spans_only_over_twin_traced`` compares the twin with the system exporting what the twin
exports, spans only (``system-traced-spans-only``, log records and metrics off), and
``spans_only_over_untraced`` that row with the untraced system: diagnostics of where the traced
gap comes from, not targets. The twin's own figures (``twin_*``) sit beside them for reference,
with ``cpu_ms_per_request`` per row (services and broker) and ``rss_mib`` per row and service
(resident memory at the end of the level); they have no targets.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bench.plan import (
    BASELINE,
    SPANS_ONLY,
    TRACED,
    TWIN_TRACED,
    TWIN_UNTRACED,
    UNREACHABLE,
    UNTRACED,
    LevelResult,
)

HEADLINE_CONCURRENCY = 32
NOT_THE_WORK = ("loadgen", "receiver")
LOW_CONCURRENCY = 1
# name: (comparison, target), from issue 12.
TARGETS: dict[str, tuple[str, float]] = {
    "system_over_twin_untraced": (">=", 0.75),
    "system_over_twin_traced": (">=", 0.75),
    "traced_over_untraced": (">=", 0.80),
    "scaling_32_over_1": (">=", 2.5),
    "p99_ms_traced": ("<=", 100.0),
    "errors": ("<=", 0),
    "dropped_spans": ("<=", 0),
}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def level_ratios(results: Mapping[str, LevelResult]) -> dict[str, float | None]:
    """Throughput ratios between the scenarios measured at one level."""
    tput = {name: r.load.throughput for name, r in results.items()}
    return {
        "system_over_twin_untraced": ratio(tput.get(UNTRACED), tput.get(TWIN_UNTRACED)),
        "system_over_twin_traced": ratio(tput.get(TRACED), tput.get(TWIN_TRACED)),
        "traced_over_untraced": ratio(tput.get(TRACED), tput.get(UNTRACED)),
        "twin_traced_over_untraced": ratio(tput.get(TWIN_TRACED), tput.get(TWIN_UNTRACED)),
        "untraced_over_baseline": ratio(tput.get(UNTRACED), tput.get(BASELINE)),
        "traced_over_baseline": ratio(tput.get(TRACED), tput.get(BASELINE)),
        "unreachable_over_traced": ratio(tput.get(UNREACHABLE), tput.get(TRACED)),
        # A diagnostic, not a target: the system exporting what the twin exports, spans only.
        "spans_only_over_twin_traced": ratio(tput.get(SPANS_ONLY), tput.get(TWIN_TRACED)),
        "spans_only_over_untraced": ratio(tput.get(SPANS_ONLY), tput.get(UNTRACED)),
    }


def summarize(
    by_level: Mapping[int, Mapping[str, LevelResult]], db: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(summary, targets) for one run on ``db``."""
    at = by_level.get(HEADLINE_CONCURRENCY, {})
    low = by_level.get(LOW_CONCURRENCY, {})
    every = [r for results in by_level.values() for r in results.values()]
    dropped = _by_scenario(
        (r for r in every if _dropped(r) is not None), lambda r: _dropped(r) or 0
    )
    audits = [r.audit for r in every if r.audit is not None]
    summary: dict[str, Any] = {
        "db": db,
        "concurrency": HEADLINE_CONCURRENCY,
        **level_ratios(at),
        "scaling_32_over_1": _scaling(at, low, UNTRACED),
        "twin_scaling_32_over_1": _scaling(at, low, TWIN_UNTRACED),
        "p99_ms_traced": _p99(at, TRACED),
        "twin_p99_ms_traced": _p99(at, TWIN_TRACED),
        "throughput_rps": {name: round(r.load.throughput, 1) for name, r in at.items()},
        "p99_ms": {name: r.load.p99_ms for name, r in at.items()},
        "cpu_ms_per_request": {name: _cpu_ms(r) for name, r in at.items()},
        "rss_mib": {name: r.rss_mib for name, r in at.items() if r.rss_mib},
        "errors": sum(r.load.errors for r in every),
        "errors_by_scenario": _by_scenario(every, lambda r: r.load.errors),
        "dropped_spans": sum(dropped.values()) if dropped else None,
        "dropped_spans_by_scenario": dropped,
        "conserved": all(a["conserved"] for a in audits) if audits else None,
        "all_fulfilled": all(a["all_fulfilled"] for a in audits) if audits else None,
        # The SDK logs "Queue full" at most once per 20 s, so this counts log lines, not spans.
        "queue_full_logged_unreachable": (
            (at[UNREACHABLE].spans or {}).get("queue_full_logged") if UNREACHABLE in at else None
        ),
    }
    targets = {name: target(summary[name], op, bound) for name, (op, bound) in TARGETS.items()}
    return summary, targets


def target(value: float | int | None, op: str, bound: float) -> dict[str, Any]:
    met = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"value": value, "target": f"{op} {bound:g}", "met": met}


def _scaling(
    high: Mapping[str, LevelResult], low: Mapping[str, LevelResult], name: str
) -> float | None:
    if name not in high or name not in low:
        return None
    return ratio(high[name].load.throughput, low[name].load.throughput)


def _p99(results: Mapping[str, LevelResult], name: str) -> float | None:
    return results[name].load.p99_ms if name in results else None


def _cpu_ms(result: LevelResult) -> float:
    """CPU per request of the processes doing the work and the broker (not the load, not the
    receiver): steadier than throughput on a shared machine."""
    cpu = result.cpu_s_per_request()
    return round(1000 * sum(v for role, v in cpu.items() if role not in NOT_THE_WORK), 3)


def _dropped(result: LevelResult) -> int | None:
    if result.spans is None or "dropped" not in result.spans:
        return None
    return int(result.spans["dropped"])


def _by_scenario(
    results: Iterable[LevelResult], value: Callable[[LevelResult], int]
) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.scenario] = out.get(r.scenario, 0) + value(r)
    return out
