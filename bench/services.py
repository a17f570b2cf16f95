"""Child processes: the real services (API, credit-check worker, fulfilment worker) and the
benchmark's own helpers (baseline client and server, built-in load generator, receiver).

The services run as they are deployed (``python -m api``, ``python -m workers.…``, JSON logs,
unbuffered stdout), from ``source_root`` (``--source-root`` points the benchmark at another
checkout, e.g. a git worktree with candidate tunings) with the caller's Python.
"""

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import broker, protocol

# Variables the caller may set to tune the services under test; everything else of theirs
# that the services read is replaced by the benchmark's own values.
PASSTHROUGH_PREFIXES = ("OTEL_BSP_", "OTEL_EXPORTER_OTLP_TIMEOUT")
PASSTHROUGH = ("LOG_LEVEL", "AMQP_PREFETCH", "DATABASE_POOL_SIZE", "RESERVATION_REPLY_TIMEOUT")
REPLACED_PREFIXES = ("OTEL_", "DATABASE_", "AMQP_", "API_", "SEED_FILE", "LOG_", "PYTHONPATH")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    _offsets: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self, label: str) -> None:
        """Remember where the log ends now; :meth:`count_since` counts lines after it."""
        self._offsets[label] = self.log_path.stat().st_size if self.log_path.exists() else 0

    def count_since(self, label: str, text: str) -> int:
        with self.log_path.open("rb") as log:
            log.seek(self._offsets.get(label, 0))
            return log.read().decode(errors="replace").count(text)

    async def read_event(self, expected: str, within: float = 60) -> dict[str, Any]:
        """Read stdout lines until the ``expected`` event (see bench.protocol)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited before {expected!r}:\n{self.log()}")
                event = protocol.parse(line)
                if event is not None and event["event"] == expected:
                    return event

    async def wait_consuming(self, amqp_url: str, queue: str, within: float = 30) -> None:
        """Until the worker consumes ``queue`` (asked of the broker: logs may be quiet)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while await broker.consumers(amqp_url, queue) < 1:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-4000:]}")
            if loop.time() > deadline:
                raise TimeoutError(f"{self.name} is not consuming {queue}:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.2)

    async def stop(self, within: float = 15) -> int | None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def spawn(
    name: str,
    module_args: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_dir: Path,
    events: bool = False,
    stdin: bool = False,
) -> Child:
    """``python -m ...`` in ``cwd``; stdout to a pipe (``events``) or to the log file."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if events else log,
            stderr=log,
        )
    return Child(name, process, log_path)


def bench_env(root: Path) -> dict[str, str]:
    """Environment for the benchmark's own helpers: they import ``bench`` and ``cli``."""
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
    api: Child
    worker: Child
    fulfilment: Child | None
    port: int

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.api, self.worker, self.fulfilment) if c is not None]

    def pids(self) -> dict[str, int]:
        pids = {"api": self.api.pid, "worker": self.worker.pid}
        if self.fulfilment is not None:
            pids["fulfilment"] = self.fulfilment.pid
        return pids

    def mark(self, label: str) -> None:
        for child in self.children:
            child.mark(label)

    def count_since(self, label: str, text: str) -> int:
        return sum(child.count_since(label, text) for child in self.children)

    async def stop(self) -> None:
        # The API first: it stops sending work; then the workers finish what is in flight.
        await self.api.stop()
        await asyncio.gather(*(c.stop() for c in self.children if c is not self.api))


def has_fulfilment(source_root: Path) -> bool:
    return (source_root / "workers" / "fulfilment" / "__main__.py").exists()


async def start_system(
    source_root: Path, amqp_url: str, env: Mapping[str, str], log_dir: Path
) -> RunningSystem:
    """Start the workers, then the API; return once each is consuming / ready."""
    started: list[Child] = []
    try:
        worker = await spawn(
            "worker", ["workers.credit_check"], env=env, cwd=source_root, log_dir=log_dir
        )
        started.append(worker)
        await worker.wait_consuming(amqp_url, "credit-check")
        fulfilment = None
        if has_fulfilment(source_root):
            fulfilment = await spawn(
                "fulfilment", ["workers.fulfilment"], env=env, cwd=source_root, log_dir=log_dir
            )
            started.append(fulfilment)
        port = free_port()
        api = await spawn(
            "api",
            ["api"],
            env={**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)},
            cwd=source_root,
            log_dir=log_dir,
        )
        started.append(api)
        if fulfilment is not None:
            await fulfilment.wait_consuming(amqp_url, "fulfilment")
        await _wait_ready(api, port)
    except BaseException:
        for child in reversed(started):
            await child.stop()
        raise
    return RunningSystem(api, worker, fulfilment, port)


async def _wait_ready(api: Child, port: int, within: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with httpx.AsyncClient() as client:
        while True:
            if api.process.returncode is not None:
                raise RuntimeError(f"the API exited:\n{api.log()[-4000:]}")
            try:
                response = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"the API was not ready in {within}s:\n{api.log()[-4000:]}")
            await asyncio.sleep(0.2)
