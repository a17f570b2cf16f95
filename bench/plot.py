"""<db>.png beside the JSON: throughput and p99 latency against concurrency, per scenario
(the twin's rows dashed)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def plot(report: dict[str, Any], path: Path) -> None:
    fig, (tput_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, levels in report["scenarios"].items():
        xs = sorted(int(c) for c in levels)
        style = "--" if name.startswith("twin") else "-"
        for ax, key in ((tput_ax, "throughput_rps"), (p99_ax, "p99_ms")):
            ax.plot(xs, [levels[str(c)][key] for c in xs], style, marker="o", label=name)
    p99_ax.axhline(100, color="grey", linestyle=":", linewidth=1, label="100 ms target")
    meta = report["meta"]
    for ax, title, unit in (
        (tput_ax, "Throughput", "requests / s"),
        (p99_ax, "p99 latency", "ms"),
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(unit)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend()
    p99_ax.set_yscale("log")
    fig.suptitle(
        f"{meta.get('mode')} run, {meta.get('db')}, {meta.get('loadgen')}, "
        f"{meta.get('cpus')} CPUs, {meta.get('started_at', '')[:16]}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
