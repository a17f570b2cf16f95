"""Running the twin's processes for a measurement: start in order, wait until ready, stop.

Each process logs to ``<log_dir>/<name>.log``. Waits are bounded; a process that exits while
being waited for fails the start with the end of its log.
"""

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import broker
from bench.twin.launch import TwinProcess

READY_WITHIN_S = 30.0


@dataclass
class Running:
    spec: TwinProcess
    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, within: float = 15) -> int | None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def start(specs: list[TwinProcess], amqp_url: str, log_dir: Path) -> list[Running]:
    """Start each process and wait until it is ready before the next; all or nothing."""
    started: list[Running] = []
    try:
        for spec in specs:
            log_path = log_dir / f"{spec.name}.log"
            with log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    *spec.module_args,
                    cwd=spec.cwd,
                    env=spec.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            running = Running(spec, process, log_path)
            started.append(running)
            await _ready(running, amqp_url)
    except BaseException:
        await stop(started)
        raise
    return started


async def stop(running: list[Running]) -> None:
    """The API first (no new work), then the workers finish what is in flight."""
    for proc in reversed(running):
        await proc.stop()


async def _ready(running: Running, amqp_url: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    async with httpx.AsyncClient() as client:
        while not await _is_ready(running.spec, amqp_url, client):
            if running.process.returncode is not None:
                raise RuntimeError(f"{running.spec.name} exited:\n{running.log()[-4000:]}")
            if loop.time() > deadline:
                raise TimeoutError(f"{running.spec.name} not ready:\n{running.log()[-4000:]}")
            await asyncio.sleep(0.2)


async def _is_ready(spec: TwinProcess, amqp_url: str, client: httpx.AsyncClient) -> bool:
    if spec.queue is not None:
        return await broker.consumers(amqp_url, spec.queue) > 0
    try:
        response = await client.get(f"http://127.0.0.1:{spec.port}/readyz", timeout=1)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
