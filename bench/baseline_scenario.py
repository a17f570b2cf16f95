"""The baseline scenario: bare aio-pika request/reply (bench.baseline), a server for the whole
scenario and one client per concurrency level, no HTTP, no database, no tracing."""

import uuid
from collections.abc import Callable
from pathlib import Path

from bench import protocol, services
from bench.plan import BASELINE, DISRUPTION_MARKERS, LevelResult, Plan, Say
from bench.procstats import CpuMeter, find_broker_pid
from devtools.processes import Process


async def run_baseline(
    plan: Plan, workdir: Path, say: Say, done: Callable[[], None]
) -> list[LevelResult]:
    queue = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    common = ["--url", plan.amqp_url, "--queue", queue]
    say("baseline: starting the server")
    server = services.spawn_helper(
        "baseline-server", ["bench.baseline", "server", *common], plan.bench_root, workdir
    )
    results = []
    try:
        await protocol.read_event(server, "ready")
        for level in plan.levels:
            say(f"baseline @ {level}: measuring")
            results.append(await _level(plan, level, server, common, workdir))
            done()
    finally:
        await services.stop(server)
    return results


async def _level(
    plan: Plan, level: int, server: Process, common: list[str], workdir: Path
) -> LevelResult:
    client = services.spawn_helper(
        f"baseline-client-{level}",
        [
            "bench.baseline",
            "client",
            *common,
            f"--concurrency={level}",
            f"--warmup={plan.warmup}",
            f"--duration={plan.duration}",
        ],
        plan.bench_root,
        workdir,
    )
    offsets = [(p, p.log_offset()) for p in (client, server)]
    meter = CpuMeter({"client": client.pid, "server": server.pid, "broker": find_broker_pid()})
    load, cpu = await services.follow_load(client, meter, plan.warmup, plan.duration)
    disrupted = sum(
        p.log_since(offset).count(marker) for p, offset in offsets for marker in DISRUPTION_MARKERS
    )
    return LevelResult(BASELINE, level, load, cpu, disrupted=disrupted)
