"""One measured level of HTTP load on the system: wrk when chosen, else the built-in client
(bench.loadgen) in its own process, with the CPU meter read at the window's edges."""

import asyncio
import os
from pathlib import Path

from bench import db, services, wrk
from bench.plan import Plan
from bench.procstats import CpuMeter, children_cpu_seconds
from devtools.load_stats import LoadResult


async def http_load(
    plan: Plan, port: int, level: int, meter: CpuMeter, workdir: Path
) -> tuple[LoadResult, dict[str, float]]:
    if plan.loadgen == "wrk":
        return await _wrk_load(plan, port, level, meter, workdir)
    loadgen = services.spawn_helper(
        f"loadgen-{level}",
        [
            "bench.loadgen",
            f"--port={port}",
            f"--concurrency={level}",
            f"--users={db.USERS}",
            f"--warmup={plan.warmup}",
            f"--duration={plan.duration}",
        ],
        plan.bench_root,
        workdir,
    )
    meter.add("loadgen", loadgen.pid)
    return await services.follow_load(loadgen, meter, plan.warmup, plan.duration)


async def _wrk_load(
    plan: Plan, port: int, level: int, meter: CpuMeter, workdir: Path
) -> tuple[LoadResult, dict[str, float]]:
    script = workdir / "bench.lua"
    script.write_text(wrk.WRK_SCRIPT)
    url = f"http://127.0.0.1:{port}/reservations"
    env = {**os.environ, "BENCH_USERS": str(db.USERS), "BENCH_ITEM": db.ITEM_ID}
    await _run(wrk.wrk_command(url, script, level, plan.warmup), env)
    meter.begin()
    children_before = children_cpu_seconds()
    output = await _run(wrk.wrk_command(url, script, level, plan.duration), env)
    cpu = meter.used()
    cpu["loadgen"] = round(children_cpu_seconds() - children_before, 4)
    return wrk.parse_wrk(output), cpu


async def _run(args: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({process.returncode}):\n{text[-2000:]}")
    return text
