"""Where, when and how a benchmark ran: recorded with its results."""

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.plan import Plan


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def meta(plan: Plan, mode: str, vhost: str | None) -> dict[str, Any]:
    return {
        "mode": mode,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "levels": plan.levels,
        "scenarios": plan.scenarios,
        "duration_s": plan.duration,
        "warmup_s": plan.warmup,
        "db": plan.db,
        "loadgen": plan.loadgen,
        "tracing_off": "OTEL_SDK_DISABLED=true",
        "tracing_on": "OTLP/gRPC, parentbased_always_on (100%), each side's own batch processor "
        "settings (system: batches of 128, twin: the SDK's 512) unless OTEL_BSP_* are set",
        "otel_bsp": {k: v for k, v in os.environ.items() if k.startswith("OTEL_BSP_")},
        "broker_vhost": vhost or "(shared: rabbitmqctl unavailable)",
        "source_root": str(plan.source_root),
        "git_commit": _git(plan.source_root, "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git(plan.source_root, "status", "--porcelain")),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
