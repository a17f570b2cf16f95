"""The scenarios, each run at every concurrency level of the plan.

- ``baseline``: bare aio-pika request/reply (bench.baseline), no HTTP, no DB, no tracing.
- ``system-untraced``: the real API + credit-check worker (+ fulfilment worker) + database,
  driven over HTTP, with ``OTEL_SDK_DISABLED=true``.
- ``system-traced``: the same with the SDK on, 100% sampling (``parentbased_always_on``; the
  load sends no ``traceparent``, so every request is a sampled root), exporting OTLP/gRPC to a
  receiver process (bench.receiver) that counts what it accepts.
- ``system-traced-spans-only``: the same, exporting spans only (``OTEL_LOGS_EXPORTER`` and
  ``OTEL_METRICS_EXPORTER`` set to ``none``), as the twin does: a diagnostic row.
- ``system-traced-unreachable``: the same, exporting to a closed port.
- ``twin-untraced`` and ``twin-traced``: the lean twin (bench/twin) in place of the system.

Per level: warm-up, then a measured window with the CPU time of every process read at its
edges; then the queues drain, the database is audited and, when traced, the benchmark waits
for the spans and checks expected (spans per request × reservations recorded) against received.
"""

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.baseline_scenario import run_baseline
from bench.plan import BASELINE, LevelResult, Plan, Say
from bench.system_scenario import run_system


async def run_scenario(
    plan: Plan, name: str, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        try:
            if name == BASELINE:
                return await run_baseline(plan, workdir, say, done)
            return await run_system(plan, name, workdir, say, done)
        finally:
            if plan.keep_logs is not None:
                await asyncio.to_thread(_copy_logs, workdir, plan.keep_logs / name)


def _copy_logs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in source.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes())
