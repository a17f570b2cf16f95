"""bench/results/latest.png: throughput and p99 latency against concurrency, per scenario."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def plot(report: dict[str, Any], path: Path) -> None:
    fig, (tput_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, levels in report["scenarios"].items():
        xs = sorted(int(c) for c in levels)
        tput_ax.plot(xs, [levels[str(c)]["throughput_rps"] for c in xs], marker="o", label=name)
        p99_ax.plot(xs, [levels[str(c)]["p99_ms"] for c in xs], marker="o", label=name)
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
    p99_ax.axhline(30, color="grey", linestyle=":", linewidth=1, label="30 ms target")
    fig.suptitle(
        f"{meta.get('mode')} run, {meta.get('db')}, {meta.get('loadgen')}, "
        f"{meta.get('cpus')} CPUs, {meta.get('started_at', '')[:16]}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
