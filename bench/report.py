"""Results as JSON (bench/results/local/<db>.json) and as markdown tables on stdout.

JSON layout::

    {"meta": {...},                    # when, where, how: machine, loadgen, db, durations
     "scenarios": {name: {"32": {...per level: throughput_rps, p50/p90/p99_ms, errors,
                                 cpu_s_per_request: {role: s}, spans: {...}, audit: {...}}}},
     "ratios": {"32": {"system_over_twin_untraced": .., "traced_over_untraced": .., ...}},
     "summary": {...},                 # the headline at 32 connections: bench.summary
     "targets": {name: {"value": .., "target": ">= 0.75", "met": bool | null}}}
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.plan import LevelResult
from bench.procstats import MEMORY_ROLES
from bench.summary import level_ratios, summarize


def build(results: Iterable[LevelResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    by_level: dict[int, dict[str, LevelResult]] = {}
    scenarios: dict[str, dict[str, Any]] = {}
    for r in results:
        by_level.setdefault(r.concurrency, {})[r.scenario] = r
        scenarios.setdefault(r.scenario, {})[str(r.concurrency)] = r.to_dict()
    summary, targets = summarize(by_level, str(meta.get("db")))
    return {
        "meta": dict(meta),
        "scenarios": scenarios,
        "ratios": {str(level): level_ratios(at) for level, at in sorted(by_level.items())},
        "summary": summary,
        "targets": targets,
    }


def spans_note(spans: dict[str, Any] | None) -> str:
    """The spans of one level, for a progress line."""
    if not spans:
        return ""
    if "expected" in spans:
        return f"  spans {spans['received']}/{spans['expected']} (dropped {spans['dropped']})"
    return f"  queue-full logged {spans.get('queue_full_logged', 0)}"


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
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
        "(the bare server in the baseline). RSS is each service's resident memory in MiB at "
        "the end of the level (api / worker / fulfil).",
        "",
        "| scenario | conns | req/s | p50 ms | p90 ms | p99 ms | errors | CPU app | CPU worker "
        "| CPU fulfil | CPU broker | CPU recv | CPU load | RSS MiB | spans exp / recv (dropped) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|",
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
            rss = r.get("rss_mib") or {}
            rss_cell = " / ".join(f"{rss[role]:.0f}" for role in MEMORY_ROLES if role in rss)
            lines.append(
                f"| {name}{flag} | {level} | {_fmt(r['throughput_rps'], 0)} | {_fmt(r['p50_ms'])} "
                f"| {_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} "
                f"| {_fmt(cpu.get('api', cpu.get('client')))} "
                f"| {_fmt(cpu.get('worker', cpu.get('server')))} "
                f"| {_fmt(cpu.get('fulfilment'))} | {_fmt(cpu.get('broker'))} "
                f"| {_fmt(cpu.get('receiver'))} | {_fmt(cpu.get('loadgen'))} | {rss_cell} "
                f"| {span_cell} |"
            )
    lines += [
        "",
        "| conns | system / twin, untraced | system / twin, traced | traced / untraced "
        "| twin traced / untraced | untraced / baseline | unreachable / traced "
        "| spans only / twin traced |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for level, r in report["ratios"].items():
        lines.append(
            f"| {level} | {_fmt(r['system_over_twin_untraced'])} "
            f"| {_fmt(r['system_over_twin_traced'])} | {_fmt(r['traced_over_untraced'])} "
            f"| {_fmt(r['twin_traced_over_untraced'])} | {_fmt(r['untraced_over_baseline'])} "
            f"| {_fmt(r['unreachable_over_traced'])} "
            f"| {_fmt(r.get('spans_only_over_twin_traced'))} |"
        )
    summary = report["summary"]
    lines += [
        "",
        f"Scaling 32 over 1 connection: system {_fmt(summary['scaling_32_over_1'])}, "
        f"twin {_fmt(summary['twin_scaling_32_over_1'])}. Audit: credits conserved "
        f"{_fmt(summary['conserved'])}, every confirmation fulfilled "
        f"{_fmt(summary['all_fulfilled'])}.",
        "",
        f"Targets on {summary['db']} at {summary['concurrency']} connections (measured):",
        "",
    ]
    for name, t in report["targets"].items():
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"- {name}: {_fmt(t['value'], 3)} (target {t['target']}): {mark}")
    return "\n".join(lines) + "\n"
