"""Results as JSON (bench/results/latest.json) and as markdown tables on stdout.

JSON layout::

    {"meta": {...},                    # when, where, how: machine, loadgen, db, durations
     "scenarios": {name: {"32": {...per level: throughput_rps, p50/p90/p99_ms, errors,
                                 cpu_s_per_request: {role: s}, spans: {...}}}},
     "ratios": {"32": {"untraced_over_baseline": .., "traced_over_baseline": ..,
                       "traced_over_untraced": .., "unreachable_over_traced": ..}},
     "summary": {...},                 # the headline numbers at 32 connections, see below
     "targets": {name: {"value": .., "target": .., "met": bool}}}

``summary`` (at 32 connections, or the level nearest to it) holds at least
``traced_over_untraced``, ``traced_over_baseline``, ``untraced_over_baseline``,
``p99_ms_traced``, ``errors`` (all scenarios together) and ``dropped_spans`` (traced, OTLP
receiver reachable).
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.plan import BASELINE, TRACED, UNREACHABLE, UNTRACED, LevelResult

HEADLINE_CONCURRENCY = 32
ROLES = ("api", "client", "worker", "server", "fulfilment", "broker", "receiver", "loadgen")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def ratios(by_level: Mapping[int, Mapping[str, LevelResult]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for level, results in sorted(by_level.items()):
        tput = {name: r.load.throughput for name, r in results.items()}
        out[str(level)] = {
            "untraced_over_baseline": _ratio(tput.get(UNTRACED), tput.get(BASELINE)),
            "traced_over_baseline": _ratio(tput.get(TRACED), tput.get(BASELINE)),
            "traced_over_untraced": _ratio(tput.get(TRACED), tput.get(UNTRACED)),
            "unreachable_over_traced": _ratio(tput.get(UNREACHABLE), tput.get(TRACED)),
        }
    return out


def build(results: Iterable[LevelResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    by_level: dict[int, dict[str, LevelResult]] = {}
    scenarios: dict[str, dict[str, Any]] = {}
    for r in results:
        by_level.setdefault(r.concurrency, {})[r.scenario] = r
        scenarios.setdefault(r.scenario, {})[str(r.concurrency)] = r.to_dict()
    ratio_table = ratios(by_level)
    headline = min(by_level, key=lambda c: abs(c - HEADLINE_CONCURRENCY)) if by_level else 0
    at = by_level.get(headline, {})
    traced = at.get(TRACED)
    unreachable = at.get(UNREACHABLE)
    summary: dict[str, Any] = {
        "concurrency": headline,
        **ratio_table.get(str(headline), {}),
        "throughput_rps": {name: round(r.load.throughput, 1) for name, r in at.items()},
        "p99_ms": {name: r.load.p99_ms for name, r in at.items()},
        "p99_ms_traced": traced.load.p99_ms if traced else None,
        "errors": sum(r.load.errors for r in at.values()),
        "errors_by_scenario": {name: r.load.errors for name, r in at.items()},
        "dropped_spans": _dropped(traced),
        # The SDK logs "Queue full" at most once per 20 s, so this counts log lines, not spans.
        "queue_full_logged_unreachable": (
            (unreachable.spans or {}).get("queue_full_logged") if unreachable else None
        ),
    }
    targets = {
        "traced_over_untraced": _target(summary["traced_over_untraced"], ">=", 0.90),
        "traced_over_baseline": _target(summary["traced_over_baseline"], ">=", 0.65),
        "p99_ms_traced": _target(summary["p99_ms_traced"], "<=", 30.0),
        "errors": _target(summary["errors"], "<=", 0),
        "dropped_spans": _target(summary["dropped_spans"], "<=", 0),
        "unreachable_over_traced": _target(summary.get("unreachable_over_traced"), ">=", 0.95),
    }
    return {
        "meta": dict(meta),
        "scenarios": scenarios,
        "ratios": ratio_table,
        "summary": summary,
        "targets": targets,
    }


def _dropped(result: LevelResult | None) -> int | None:
    if result is None or result.spans is None:
        return None
    return int(result.spans.get("dropped", 0))


def _target(value: float | int | None, op: str, target: float) -> dict[str, Any]:
    met = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"value": value, "target": f"{op} {target:g}", "met": met}


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(report: Mapping[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"## Benchmark ({meta.get('mode')}, {meta.get('db')}, loadgen {meta.get('loadgen')}, "
        f"{meta.get('duration_s')} s per level after {meta.get('warmup_s')} s warm-up)",
        "",
        "CPU is milliseconds of CPU time per request, per process (user + system, psutil). "
        "`app` is the API (the bare client in the baseline), `worker` the credit-check worker "
        "(the bare server in the baseline).",
        "",
        "| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | errors | CPU app | CPU worker "
        "| CPU fulfil | CPU broker | CPU recv | CPU load | spans exp / recv (dropped) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|",
    ]
    for name, levels in report["scenarios"].items():
        for level, r in levels.items():
            cpu = {k: v * 1000 for k, v in r["cpu_s_per_request"].items()}
            spans = r.get("spans") or {}
            if "expected" in spans:
                span_cell = f"{spans['expected']:,} / {spans['received']:,} ({spans['dropped']})"
            elif spans:
                span_cell = f"queue-full logged: {spans.get('queue_full_logged', 0)}"
            else:
                span_cell = ""
            flag = " ⚠ broker disrupted" if r.get("broker_disrupted") else ""
            lines.append(
                f"| {name}{flag} | {level} | {_fmt(r['throughput_rps'], 0)} | {_fmt(r['p50_ms'])} "
                f"| {_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} "
                f"| {_fmt(cpu.get('api', cpu.get('client')))} "
                f"| {_fmt(cpu.get('worker', cpu.get('server')))} "
                f"| {_fmt(cpu.get('fulfilment'))} | {_fmt(cpu.get('broker'))} "
                f"| {_fmt(cpu.get('receiver'))} | {_fmt(cpu.get('loadgen'))} | {span_cell} |"
            )
    lines += [
        "",
        "| conns | untraced / baseline | traced / baseline | traced / untraced "
        "| unreachable / traced |",
        "|--:|--:|--:|--:|--:|",
    ]
    for level, r in report["ratios"].items():
        lines.append(
            f"| {level} | {_fmt(r['untraced_over_baseline'])} | {_fmt(r['traced_over_baseline'])} "
            f"| {_fmt(r['traced_over_untraced'])} | {_fmt(r['unreachable_over_traced'])} |"
        )
    lines += ["", f"Targets at {report['summary']['concurrency']} connections (measured):", ""]
    for name, t in report["targets"].items():
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"- {name}: {_fmt(t['value'], 3)} (target {t['target']}): {mark}")
    return "\n".join(lines) + "\n"
