"""Real processes for end-to-end tests: the API under uvicorn and the workers as modules,
each with its own environment, tracer provider and log file."""

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Process:
    name: str
    popen: "subprocess.Popen[bytes]"
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, within: float = 20) -> None:
        for attempt in eventually(within, every=0.1):
            with attempt:
                assert self.popen.poll() is None, f"{self.name} exited:\n{self.log()}"
                assert text in self.log(), f"{self.name} has not logged {text!r} yet"

    def wait_exit(self, within: float = 15) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        try:
            return self.popen.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {within}s") from None

    def stop(self, within: float = 15) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(within)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def base_env(amqp_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE_"))}
    env.update(
        {
            "AMQP_URL": amqp_url,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    env.update(extra)
    return env


def migrate(env: Mapping[str, str]) -> None:
    """``python -m store.migrate`` with this environment, as every deployment runs it first."""
    done = subprocess.run(
        [sys.executable, "-m", "store.migrate"],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            args, cwd=ROOT, env=dict(env), stdout=log_file, stderr=subprocess.STDOUT
        )
    return Process(name, popen, log_path)


def start_api(port: int, env: Mapping[str, str], log_dir: Path, name: str = "api") -> Process:
    process = spawn(
        name,
        [sys.executable, "-m", "api"],
        {**env, "API_HOST": "127.0.0.1", "API_PORT": str(port)},
        log_dir,
    )
    for attempt in eventually(30, every=0.2, retry_on=(AssertionError, httpx.HTTPError)):
        with attempt:
            assert process.popen.poll() is None, f"{name} exited:\n{process.log()}"
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    return process


def start_worker(
    module: str, env: Mapping[str, str], log_dir: Path, name: str | None = None
) -> Process:
    process = spawn(name or module, [sys.executable, "-m", module], env, log_dir)
    process.wait_for_log('"consuming"')
    return process
