"""The bench's plan, summary and results paths: quick checks, no benchmark and no timing.

- every run measures 1 and 32 connections, and the twin beside the system;
- the summary reports issue 12's keys and judges each against its target;
- a full run adds the system exporting spans only, beside the twin that exports nothing else;
- runs write to a git-ignored folder (the checkout stays clean); only bench.publish writes
  the committed figures, and it refuses a quick run unless asked.
"""

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as cli
from bench import plan, report
from bench.plan import LevelResult
from bench.publish import LOCAL, PUBLISHED, NotPublishable, publish
from bench.targets import tracing_env
from devtools.load_stats import LoadResult

ROOT = Path(__file__).resolve().parents[2]


def _load(rps: float, p99: float, errors: int = 0) -> LoadResult:
    return LoadResult(int(rps * 10), errors, 10.0, p99 / 2, p99 / 1.5, p99, p99, p99 / 2)


def _level(
    name: str, conns: int, rps: float, p99: float, dropped: int | None = None
) -> LevelResult:
    spans = None
    if dropped is not None:
        spans = {"expected": 100, "received": 100 - dropped, "dropped": dropped}
    audit = {"conserved": True, "all_fulfilled": True}
    cpu = {"api": rps / 1000, "worker": rps / 500, "loadgen": 1.0}  # 0.3 ms per request, + load
    rss = {"api": 90.0 + conns, "worker": 80.0}
    return LevelResult(name, conns, _load(rps, p99), cpu, spans, audit=audit, rss_mib=rss)


def _run(**overrides: tuple[float, float]) -> list[LevelResult]:
    """A run at 1 and 32 connections; (rps, p99) per scenario at 32, a quarter of that at 1."""
    at_32 = {
        plan.BASELINE: (1200.0, 40.0),
        plan.TWIN_UNTRACED: (700.0, 70.0),
        plan.TWIN_TRACED: (400.0, 140.0),
        plan.UNTRACED: (560.0, 90.0),
        plan.TRACED: (320.0, 95.0),
        **overrides,
    }
    traced = (plan.TRACED, plan.TWIN_TRACED)
    return [
        _level(name, conns, rps * (1 if conns == 32 else 0.25), p99, 0 if name in traced else None)
        for name, (rps, p99) in at_32.items()
        for conns in (1, 32)
    ]


def test_every_run_measures_1_and_32_connections_and_the_twin_beside_the_system() -> None:
    quick = cli.make_plan(cli.parse_args(["--quick", "--loadgen", "builtin"]))
    assert quick.levels == [1, 32]
    custom = cli.make_plan(cli.parse_args(["--levels", "8,64", "--loadgen", "builtin"]))
    assert custom.levels == [1, 8, 32, 64]
    assert {plan.BASELINE, plan.UNTRACED, plan.TRACED, plan.TWIN_UNTRACED, plan.TWIN_TRACED} <= set(
        quick.scenarios
    )
    assert cli.make_plan(cli.parse_args(["--db", "postgres", "--loadgen", "builtin"])).db == (
        "postgres"
    )


def test_the_summary_reports_the_issue_keys_and_whether_each_target_is_met() -> None:
    data = report.build(_run(), {"db": "sqlite", "mode": "full"})
    summary, targets = data["summary"], data["targets"]
    assert summary["db"] == "sqlite" and summary["concurrency"] == 32
    assert summary["system_over_twin_untraced"] == 0.8
    assert summary["system_over_twin_traced"] == 0.8
    assert summary["traced_over_untraced"] == pytest.approx(0.571, abs=0.001)
    assert summary["scaling_32_over_1"] == 4.0
    assert summary["p99_ms_traced"] == 95.0
    assert (summary["errors"], summary["dropped_spans"]) == (0, 0)
    assert summary["conserved"] is True and summary["all_fulfilled"] is True
    assert summary["cpu_ms_per_request"][plan.UNTRACED] == pytest.approx(0.3)
    assert summary["rss_mib"][plan.TRACED] == {"api": 122.0, "worker": 80.0}  # at 32
    met = {name: t["met"] for name, t in targets.items()}
    assert met == {
        "system_over_twin_untraced": True,
        "system_over_twin_traced": True,
        "traced_over_untraced": False,
        "scaling_32_over_1": True,
        "p99_ms_traced": True,
        "errors": True,
        "dropped_spans": True,
    }
    assert "| 32 | 0.80 | 0.80 | 0.57 |" in report.markdown(data)
    assert "| 122 / 80 |" in report.markdown(data)  # the RSS column, api / worker


def test_a_full_run_also_measures_the_system_exporting_spans_only_as_the_twin_does() -> None:
    full = cli.make_plan(cli.parse_args(["--loadgen", "builtin"]))
    quick = cli.make_plan(cli.parse_args(["--quick", "--loadgen", "builtin"]))
    without = cli.make_plan(cli.parse_args(["--no-spans-only", "--loadgen", "builtin"]))
    assert plan.SPANS_ONLY in full.scenarios
    assert plan.SPANS_ONLY not in quick.scenarios and plan.SPANS_ONLY not in without.scenarios
    env = tracing_env(plan.TARGETS[plan.SPANS_ONLY][1], "http://127.0.0.1:4317")
    assert env["OTEL_TRACES_EXPORTER"] == "otlp" and "OTEL_SDK_DISABLED" not in env
    assert (env["OTEL_LOGS_EXPORTER"], env["OTEL_METRICS_EXPORTER"]) == ("none", "none")
    assert "OTEL_LOGS_EXPORTER" not in tracing_env(plan.TARGETS[plan.TRACED][1], "http://x:1")

    results = [*_run(), _level(plan.SPANS_ONLY, 1, 90.0, 20.0, 0)]
    results.append(_level(plan.SPANS_ONLY, 32, 360.0, 90.0, 2))
    data = report.build(results, {"db": "sqlite", "mode": "full"})
    assert data["summary"]["spans_only_over_twin_traced"] == 0.9  # 360 / 400
    assert data["summary"]["spans_only_over_untraced"] == pytest.approx(0.643, abs=0.001)
    assert data["summary"]["dropped_spans_by_scenario"][plan.SPANS_ONLY] == 2
    assert "spans_only_over_twin_traced" not in data["targets"]  # a diagnostic, not a target
    assert "| 32 | 0.80 | 0.80 | 0.57 | 0.57 | 0.47 | – | 0.90 |" in report.markdown(data)


def test_dropped_spans_and_errors_count_at_every_level_and_a_missing_row_is_not_measured() -> None:
    results = [r for r in _run() if r.scenario != plan.TWIN_UNTRACED]
    results[0] = LevelResult(results[0].scenario, 1, _load(10, 5, errors=3), {})
    twin_traced_1 = next(r for r in results if (r.scenario, r.concurrency) == (plan.TWIN_TRACED, 1))
    assert twin_traced_1.spans is not None
    twin_traced_1.spans["dropped"] = 7
    data = report.build(results, {"db": "postgres"})
    assert data["summary"]["errors"] == 3
    assert data["summary"]["dropped_spans"] == 7
    assert data["summary"]["dropped_spans_by_scenario"] == {plan.TWIN_TRACED: 7, plan.TRACED: 0}
    assert data["targets"]["system_over_twin_untraced"] == {
        "value": None,
        "target": ">= 0.75",
        "met": None,
    }
    assert data["targets"]["errors"]["met"] is False


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_a_run_writes_to_a_git_ignored_folder_and_leaves_the_checkout_clean() -> None:
    args = cli.parse_args([])
    assert args.output == LOCAL and LOCAL.parent == PUBLISHED
    if _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout")
    path = LOCAL / f"test-{uuid.uuid4().hex[:8]}.json"
    report.write_json(report.build(_run(), {"db": "sqlite"}), path)
    try:
        assert _git("check-ignore", "-q", str(path)).returncode == 0
        status = _git("status", "--porcelain", "--untracked-files=all", "--", "bench/results")
        assert path.name not in status.stdout
    finally:
        path.unlink()


def _results(directory: Path, db: str, mode: str, plot: bool = True) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    data = {"meta": {"mode": mode, "db": db}, "marker": marker}
    (directory / f"{db}.json").write_text(json.dumps(data))
    if plot:
        (directory / f"{db}.png").write_bytes(f"png {marker}".encode())
    return data


def test_publish_copies_full_runs_and_refuses_a_quick_one_unless_asked(tmp_path: Path) -> None:
    local, published = tmp_path / "local", tmp_path / "published"
    with pytest.raises(NotPublishable, match="run `make bench` first"):
        publish(local, published, ["sqlite", "postgres"])
    full = _results(local, "sqlite", "full")
    quick = _results(local, "postgres", "quick")
    with pytest.raises(NotPublishable, match="quick run"):
        publish(local, published, ["sqlite", "postgres"])
    assert not published.exists()  # nothing copied before every result was checked
    written = publish(local, published, ["sqlite"])
    assert sorted(p.name for p in written) == ["sqlite.json", "sqlite.png"]
    assert json.loads((published / "sqlite.json").read_text()) == full
    publish(local, published, ["postgres"], allow_quick=True)
    assert json.loads((published / "postgres.json").read_text()) == quick


def test_publish_removes_a_plot_from_another_run(tmp_path: Path) -> None:
    local, published = tmp_path / "local", tmp_path / "published"
    _results(local, "sqlite", "full")
    publish(local, published, ["sqlite"])
    shutil.rmtree(local)
    _results(local, "sqlite", "full", plot=False)
    assert [p.name for p in publish(local, published, ["sqlite"])] == ["sqlite.json"]
    assert not (published / "sqlite.png").exists()
