"""Driving the twin over HTTP for a measurement: wrk (or the built-in client), and tracing's
calibration (how many spans one reservation makes, all in one trace).

Only ever against 127.0.0.1, bounded in time: a warm-up run, then the measured run.
"""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx

from bench import db, protocol, services, wrk
from bench.receiver import ReceiverClient
from devtools.load_stats import LoadResult

CALIBRATION_REQUESTS = 5


async def http_load(port: int, connections: int, seconds: float, workdir: Path) -> LoadResult:
    """One window of ``seconds`` at ``connections`` (call it once more before, to warm up)."""
    if wrk.wrk_path() is None:
        return await _builtin(port, connections, seconds)
    script = workdir / "bench.lua"
    script.write_text(wrk.WRK_SCRIPT)
    url = f"http://127.0.0.1:{port}/reservations"
    env = {**os.environ, "BENCH_USERS": str(db.USERS), "BENCH_ITEM": db.ITEM_ID}
    return wrk.parse_wrk(await _run(wrk.wrk_command(url, script, connections, seconds), env))


async def _run(args: list[str], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({process.returncode}):\n{text[-2000:]}")
    return text


async def _builtin(port: int, connections: int, seconds: float) -> LoadResult:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        f"--port={port}",
        f"--concurrency={connections}",
        f"--users={db.USERS}",
        "--warmup=0",
        f"--duration={seconds}",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(seconds + 60):
        async for line in process.stdout:
            event = protocol.parse(line)
            if event is not None and event["event"] == "done":
                await process.wait()
                return LoadResult.from_dict(event["result"])
    raise RuntimeError("the built-in load generator exited without a result")


def bsp_delay_s() -> float:
    return float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000


async def calibrate(port: int, receiver: ReceiverClient) -> int:
    """Spans per confirmed reservation; every calibration trace must hold the same count,
    which also checks that API, worker and fulfilment land in one trace."""
    trace_ids = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(CALIBRATION_REQUESTS):
            response = await client.post(
                "/reservations", json={"username": f"bench-{i}", "item_id": db.ITEM_ID}
            )
            if response.status_code != 201:
                raise RuntimeError(f"calibration got {response.status_code}: {response.text}")
            trace_ids.append(response.headers["x-trace-id"])
    settle = time.monotonic() + bsp_delay_s() + 1.0
    deadline = settle + 20
    while True:
        await asyncio.sleep(0.25)
        counts = await receiver.trace_counts(trace_ids)
        values = set(counts.values())
        if time.monotonic() >= settle and len(values) == 1 and 0 not in values:
            return values.pop()
        if time.monotonic() > deadline:
            raise RuntimeError(f"traces did not settle to one span count: {json.dumps(counts)}")


async def wait_for_spans(receiver: ReceiverClient, target: int) -> int:
    deadline = time.monotonic() + bsp_delay_s() + 10
    while True:
        received = await receiver.received()
        if received >= target or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.25)


BENCH_ROOT = Path(__file__).resolve().parents[2]


async def start_receiver(workdir: Path) -> ReceiverClient:
    process = services.spawn_helper("receiver", ["bench.receiver"], BENCH_ROOT, workdir, stdin=True)
    ready = await protocol.read_event(process, "ready")
    return ReceiverClient(process, int(ready["port"]))
