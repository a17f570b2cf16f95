"""Child processes: the real services (API, credit-check worker, fulfilment worker) and the
benchmark's own helpers (baseline client and server, built-in load generator, receiver).

The services run as they are deployed (``python -m api``, ``python -m workers.…``, JSON logs,
unbuffered stdout), from ``source_root`` (``--source-root`` points the benchmark at another
checkout, e.g. a git worktree with candidate tunings) with the caller's Python.
"""

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import broker, protocol
from bench.procstats import CpuMeter
from devtools.addresses import free_port
from devtools.load_stats import LoadResult
from devtools.processes import Process, python_module
from devtools.waiting import eventually_async

# Variables the caller may set to tune the services under test; everything else of theirs
# that the services read is replaced by the benchmark's own values.
PASSTHROUGH_PREFIXES = ("OTEL_BSP_", "OTEL_EXPORTER_OTLP_TIMEOUT")
PASSTHROUGH = ("LOG_LEVEL", "AMQP_PREFETCH", "DATABASE_POOL_SIZE", "RESERVATION_REPLY_TIMEOUT")
REPLACED_PREFIXES = ("OTEL_", "DATABASE_", "AMQP_", "API_", "SEED_FILE", "LOG_", "PYTHONPATH")


def spawn(
    name: str,
    module_args: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_dir: Path,
    events: bool = False,
    stdin: bool = False,
) -> Process:
    """``python -m ...`` in ``cwd``; stdout to a pipe (``events``) or to the log file."""
    return Process.start(
        name,
        python_module(*module_args),
        env,
        log_path=log_dir / f"{name}.log",
        cwd=cwd,
        pipe_stdout=events,
        stdin=stdin,
    )


def spawn_helper(
    name: str, module_args: list[str], root: Path, log_dir: Path, stdin: bool = False
) -> Process:
    """One of the benchmark's own processes (it talks bench.protocol on stdout)."""
    return spawn(
        name, module_args, env=bench_env(root), cwd=root, log_dir=log_dir, events=True, stdin=stdin
    )


async def stop(process: Process, within: float = 15) -> int:
    return await asyncio.to_thread(process.stop, within)


async def follow_load(
    process: Process, meter: CpuMeter, warmup: float, duration: float
) -> tuple[LoadResult, dict[str, float]]:
    """Follow a load process (bench.protocol) through its run: CPU read at the edges of the
    measured window, then its result; stopped however that ends."""
    try:
        await protocol.read_event(process, "ready")
        await protocol.read_event(process, "start", warmup + 30)
        meter.begin()
        await protocol.read_event(process, "end", duration + 30)
        cpu = meter.used()
        event = await protocol.read_event(process, "done", 60)
        await asyncio.to_thread(process.popen.wait, 30)
    finally:
        await stop(process)
    return LoadResult.from_dict(event["result"]), cpu


def bench_env(root: Path) -> dict[str, str]:
    """Environment for the benchmark's own helpers: they import ``bench``, ``cli``, ``devtools``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(REPLACED_PREFIXES)}
    env["PYTHONPATH"] = str(root)
    return env


def service_env(
    source_root: Path, amqp_url: str, tracing: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(REPLACED_PREFIXES)}
    env.update(
        {
            k: v
            for k, v in os.environ.items()
            if k.startswith(PASSTHROUGH_PREFIXES) or k in PASSTHROUGH
        }
    )
    env.update(
        {
            "PYTHONPATH": str(source_root),
            "PYTHONUNBUFFERED": "1",
            "LOG_FORMAT": "json",
            "AMQP_URL": amqp_url,
        }
    )
    env.update(tracing)
    env.update(extra)
    return env


@dataclass
class RunningSystem:
    api: Process
    worker: Process
    fulfilment: Process | None
    port: int

    @property
    def children(self) -> list[Process]:
        return [c for c in (self.api, self.worker, self.fulfilment) if c is not None]

    def pids(self) -> dict[str, int]:
        pids = {"api": self.api.pid, "worker": self.worker.pid}
        if self.fulfilment is not None:
            pids["fulfilment"] = self.fulfilment.pid
        return pids

    def log_offsets(self) -> dict[str, int]:
        """Where each log ends now; :meth:`count_since` counts lines logged after."""
        return {child.name: child.log_offset() for child in self.children}

    def count_since(self, offsets: Mapping[str, int], text: str) -> int:
        return sum(child.log_since(offsets[child.name]).count(text) for child in self.children)

    async def stop(self) -> None:
        # The API first: it stops sending work; then the workers finish what is in flight.
        await stop(self.api)
        await asyncio.gather(*(stop(c) for c in self.children if c is not self.api))


def has_fulfilment(source_root: Path) -> bool:
    return (source_root / "workers" / "fulfilment" / "__main__.py").exists()


async def start_system(
    source_root: Path, amqp_url: str, env: Mapping[str, str], log_dir: Path
) -> RunningSystem:
    """Start the workers, then the API; return once each is consuming / ready."""
    started: list[Process] = []

    def start(name: str, module: str, extra: Mapping[str, str] | None = None) -> Process:
        extended = {**env, **(extra or {})}
        process = spawn(name, [module], env=extended, cwd=source_root, log_dir=log_dir)
        started.append(process)
        return process

    try:
        worker = start("worker", "workers.credit_check")
        await wait_consuming(worker, amqp_url, "credit-check")
        fulfilment = (
            start("fulfilment", "workers.fulfilment") if has_fulfilment(source_root) else None
        )
        port = free_port()
        api = start("api", "api", {"API_HOST": "127.0.0.1", "API_PORT": str(port)})
        if fulfilment is not None:
            await wait_consuming(fulfilment, amqp_url, "fulfilment")
        await wait_ready(api, port)
    except BaseException:
        for child in reversed(started):
            await stop(child)
        raise
    return RunningSystem(api, worker, fulfilment, port)


async def wait_consuming(process: Process, amqp_url: str, queue: str, within: float = 30) -> None:
    """Until the worker consumes ``queue`` (asked of the broker: logs may be quiet)."""
    async for attempt in eventually_async(within, every=0.2):
        with attempt:
            process.check_running()
            assert await broker.consumers(amqp_url, queue) >= 1, (
                f"{process.name} is not consuming {queue}:\n{process.log()[-4000:]}"
            )


async def wait_ready(api: Process, port: int, within: float = 30) -> None:
    async with httpx.AsyncClient() as client:
        async for attempt in eventually_async(
            within, every=0.2, retry_on=(AssertionError, httpx.HTTPError)
        ):
            with attempt:
                api.check_running()
                response = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                assert response.status_code == 200, (
                    f"the API was not ready in {within}s:\n{api.log()[-4000:]}"
                )
